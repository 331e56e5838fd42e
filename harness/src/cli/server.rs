//! `faultline server`: a livekit-server (and toxiproxy) for manual use, until Ctrl-C.

use std::process::ExitCode;

use anyhow::Context;
use faultline::server::{LiveKitServer, ServerOptions};
use faultline::toxiproxy::{Toxiproxy, ToxiproxyOptions};

/// Options of `faultline server`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The livekit-server version (default: `FAULTLINE_LIVEKIT_VERSION`, else v1.13.5).
    #[arg(long = "version")]
    livekit_version: Option<String>,
    /// A fixed HTTP/WebSocket port (default: a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Also start toxiproxy.
    #[arg(long)]
    toxiproxy: bool,
}

/// Starts the programs, prints how to reach them, waits for Ctrl-C, then stops them.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let defaults = ServerOptions::default();
    let opts = ServerOptions {
        version: args.livekit_version.unwrap_or(defaults.version.clone()),
        http_port: args.port,
        name: Some("faultline-server".into()),
        ..defaults
    };
    let server = LiveKitServer::start(opts).await.context("starting livekit-server")?;
    println!("livekit-server {} ready ({})", server.version(), server.source());
    println!("  url:        {}", server.ws_url());
    println!("  http:       {}", server.http_url());
    println!("  api key:    {}", server.api_key());
    // Printed on purpose: the user asked for a server to connect to by hand.
    println!("  api secret: {}", server.api_secret());
    if let Some(log) = server.log_path() {
        println!("  log:        {}", log.display());
    }
    if let Some(pid) = server.pid() {
        println!("livekit-server pid: {pid}");
    }
    let toxiproxy = if args.toxiproxy {
        let opts = ToxiproxyOptions { name: Some("faultline-server".into()), ..Default::default() };
        let toxiproxy = Toxiproxy::start(opts).await.context("starting toxiproxy")?;
        println!("toxiproxy {} ready ({})", toxiproxy.version(), toxiproxy.source());
        println!("  api:        {}", toxiproxy.api_url());
        println!("  log:        {}", toxiproxy.log_path().display());
        if let Some(pid) = toxiproxy.pid() {
            println!("toxiproxy pid: {pid}");
        }
        Some(toxiproxy)
    } else {
        None
    };
    println!("ready; press Ctrl-C to stop");
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    println!("stopping");
    drop(toxiproxy);
    drop(server);
    Ok(ExitCode::SUCCESS)
}
