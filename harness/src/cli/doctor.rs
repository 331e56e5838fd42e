//! `faultline doctor`: what this machine can use to run livekit-server, toxiproxy and the
//! cluster lane's Redis, which system packages it lacks (with the command that installs
//! them), and which SDK clients can run here.

use std::net::{TcpListener, UdpSocket};
use std::process::ExitCode;

use faultline::client::Sdk;
use faultline::cluster::redis;
use faultline::provision::{self, Program, ProvisionEnv};
use faultline::server::ServerOptions;

/// Options of `faultline doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The livekit-server version to check for (default: `FAULTLINE_LIVEKIT_VERSION`, else
    /// v1.13.5).
    #[arg(long)]
    livekit_version: Option<String>,
}

/// Prints every source and tool; exits 0 when each program has at least one working source.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let env = ProvisionEnv::from_env();
    let livekit_version = args.livekit_version.unwrap_or_else(|| ServerOptions::default().version);
    println!("cache:        {}", env.cache_dir.display());
    match env.find_on_path("go") {
        Some(go) => match provision::go_version(&go, &env).await {
            Ok(version) => println!("go:           {} ({version})", go.display()),
            Err(e) => println!("go:           {} (does not run: {e})", go.display()),
        },
        None => println!("go:           not found on PATH"),
    }
    let cli = match env.find_on_path("docker") {
        Some(docker) => format!("CLI {}", docker.display()),
        None => "no docker CLI on PATH".to_string(),
    };
    match provision::docker_engine(&env).await {
        Ok(engine) => println!("docker:       engine {engine} answers; {cli}"),
        Err(e) => println!("docker:       {cli}; {e}"),
    }
    println!("cached:       {}", cached_binaries(&env));
    println!(
        "LIVEKIT_URL:  {}",
        env.livekit_url.as_deref().unwrap_or("not set (faultline starts its own server)")
    );
    println!("free ports:   {}", free_ports());

    let mut all_ok = true;
    for (program, version) in [
        (Program::LiveKitServer, livekit_version.as_str()),
        (Program::Toxiproxy, provision::DEFAULT_TOXIPROXY_VERSION),
    ] {
        let attempts = provision::survey(program, version, &env).await;
        let usable = attempts.iter().any(|a| a.chosen);
        all_ok &= usable;
        println!("\n{program} {version}: {}", if usable { "available" } else { "NO SOURCE" });
        for attempt in &attempts {
            let mark = if attempt.chosen { "ok  " } else { "--  " };
            println!("  {mark}{:<22} {}", attempt.source, attempt.detail);
        }
    }
    let (redis_ok, attempts) = match redis::provision(&env, true).await {
        Ok((_, attempts)) => (true, attempts),
        Err(redis::RedisError::NoSource { attempts }) => (false, attempts),
        Err(e) => (
            false,
            vec![provision::Attempt { source: "redis", chosen: false, detail: e.to_string() }],
        ),
    };
    println!(
        "\nredis-server (the cluster lane): {}",
        if redis_ok { "available" } else { "NO SOURCE" }
    );
    for attempt in &attempts {
        let mark = if attempt.chosen { "ok  " } else { "--  " };
        println!("  {mark}{:<22} {}", attempt.source, attempt.detail);
    }
    if !redis_ok {
        println!("  fix: {}, or set REDIS_SERVER_BIN", redis::install_hint());
    }
    let system = provision::system::survey(&env);
    println!("\nsystem packages (the harness cannot install these itself):");
    for tool in &system {
        let mark = if tool.present { "ok  " } else { "--  " };
        println!("  {mark}{:<18} {}", tool.tool, tool.needed_for);
    }
    let root = provision::system::running_as_root();
    if let Some(command) = provision::system::install_command(&system, root) {
        println!("  install what is missing (Debian/Ubuntu): {command}");
    }
    println!("\nSDK clients:");
    for sdk in Sdk::ALL.into_iter().chain([Sdk::Driver]) {
        match sdk.readiness(&env) {
            Ok(what) => println!("  ok  {sdk:<14} {what}"),
            Err(e) => println!("  --  {sdk:<14} {e}"),
        }
    }
    if !all_ok {
        println!(
            "\nfix: install Go >= 1.26 (faultline builds the programs once into its cache), \
             or set LIVEKIT_SERVER_BIN / TOXIPROXY_SERVER_BIN, or start a Docker engine"
        );
    }
    Ok(if all_ok && redis_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn cached_binaries(env: &ProvisionEnv) -> String {
    let dir = env.cache_dir.join("bin");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        format!("none in {}", dir.display())
    } else {
        names.join(", ")
    }
}

fn free_ports() -> String {
    let tcp = TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr());
    let udp = UdpSocket::bind(("127.0.0.1", 0)).and_then(|s| s.local_addr());
    let default = match TcpListener::bind(("127.0.0.1", 7880)) {
        Ok(_) => "7880 free".to_string(),
        Err(e) => format!("7880 taken ({e})"),
    };
    match (tcp, udp) {
        (Ok(t), Ok(u)) => format!(
            "127.0.0.1 TCP (e.g. {}) and UDP (e.g. {}) bindable; {default}",
            t.port(),
            u.port()
        ),
        (Err(e), _) | (_, Err(e)) => format!("cannot bind 127.0.0.1: {e}"),
    }
}
