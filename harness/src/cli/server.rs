//! `faultline server`: a livekit-server (and toxiproxy) for manual use, until Ctrl-C —
//! optionally in a network namespace of its own with client namespaces joined to it, to run
//! clients in and fault by hand.

use std::process::ExitCode;

use anyhow::Context;
use faultline::netns::Topology;
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
    /// Run the server in a network namespace of its own, with this many client namespaces
    /// joined to it (Linux, as root); prints their names and addresses.
    #[arg(long, value_name = "CLIENTS")]
    netns: Option<usize>,
}

/// Starts the programs, prints how to reach them, waits for Ctrl-C, then stops them.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let topology = match args.netns {
        Some(clients) => {
            // Refused up front, with the cause and the fix, rather than run without them.
            if let Err(e) = Topology::available() {
                eprintln!("faultline: cannot use network namespaces: {e}");
                return Ok(ExitCode::from(2));
            }
            Some(Topology::create(clients).await.context("creating the network namespaces")?)
        }
        None => None,
    };
    let defaults = ServerOptions::default();
    let opts = ServerOptions {
        version: args.livekit_version.unwrap_or(defaults.version.clone()),
        http_port: args.port,
        name: Some("faultline-server".into()),
        netns: topology.as_ref().map(|t| t.server().clone()),
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
    if let Some(topology) = &topology {
        print_topology(topology);
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
    drop(topology);
    Ok(ExitCode::SUCCESS)
}

/// The namespaces, how to run a client in one, and how to look inside; one `netns:` line per
/// namespace for scripts. They are removed when the command ends, however it ends.
fn print_topology(topology: &Topology) {
    let server = topology.server();
    println!("network namespaces (removed when this command ends):");
    println!("  root side:  {} {}", topology.name(), topology.root_address());
    println!("  server:     {} {}", server.namespace().name(), server.address());
    for client in topology.clients() {
        println!(
            "  client {}:   {} {}",
            client.index(),
            client.namespace().name(),
            client.address()
        );
    }
    if let Some(client) = topology.clients().first() {
        let ns = client.namespace().name();
        println!("  run a client: ip netns exec {ns} <program> (signalling at the url above)");
        println!("  look inside:  ip -n {ns} addr; ip netns exec {ns} nft -a list ruleset");
    }
    println!("root link: {}", topology.name());
    println!("netns: {}", server.namespace().name());
    for client in topology.clients() {
        println!("netns: {}", client.namespace().name());
    }
}
