//! A process that started livekit-server and toxiproxy, network namespaces, or SDK drivers
//! (and the browser one of them runs), and is then SIGKILLed (so none of its destructors
//! run) leaves none of them behind.
//!
//! It lives in the harness package because it runs the `faultline` binary, which cargo
//! builds (and names in `CARGO_BIN_EXE_faultline`) only for this package's own tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use faultline::supervise::process_alive;

fn pid_after(line: &str, prefix: &str) -> Option<u32> {
    line.strip_prefix(prefix).and_then(|rest| rest.trim().parse().ok())
}

/// Starts `faultline server <args>` and returns it with every line it printed up to `ready`.
fn start_server(args: &[&str]) -> Result<(Child, Vec<String>)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("spawning faultline server {}", args.join(" ")))?;
    let stdout = child.stdout.take().context("stdout is piped")?;
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // A first run may build both programs into the cache: allow for that.
    let deadline = Instant::now() + Duration::from_secs(25 * 60);
    let mut printed = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with("ready") => return Ok((child, printed)),
            Ok(line) => printed.push(line),
            Err(e) => {
                let _ = child.kill();
                bail!("faultline server did not report ready: {e}; it printed {printed:#?}");
            }
        }
    }
}

/// Polls `gone` every 100 ms for up to 10 s after a SIGKILL.
fn wait_gone(what: impl Fn() -> String, gone: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone() {
        if Instant::now() > deadline {
            bail!("10 s after SIGKILL of their parent: {}", what());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn servers_die_with_a_sigkilled_parent() -> Result<()> {
    let (mut child, printed) = start_server(&["--toxiproxy"])?;
    let pid = |prefix| printed.iter().find_map(|line| pid_after(line, prefix));
    let livekit = pid("livekit-server pid:").context("no livekit-server pid printed")?;
    let toxiproxy = pid("toxiproxy pid:").context("no toxiproxy pid printed")?;
    assert!(
        process_alive(livekit) && process_alive(toxiproxy),
        "servers not running while the parent lives"
    );

    child.kill().context("SIGKILL faultline")?;
    child.wait()?;
    wait_gone(
        || {
            format!(
                "livekit-server {livekit} alive: {}, toxiproxy {toxiproxy} alive: {}",
                process_alive(livekit),
                process_alive(toxiproxy)
            )
        },
        || !process_alive(livekit) && !process_alive(toxiproxy),
    )
}

/// What of `namespaces` `ip netns list` still lists, and `link` if it still exists.
fn namespaces_left(namespaces: &[String], link: &str) -> Vec<String> {
    let listed = Command::new("ip").args(["netns", "list"]).output();
    let listed = listed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let listed = listed.unwrap_or_default();
    let mut left: Vec<String> = namespaces
        .iter()
        .filter(|ns| listed.lines().any(|l| l.split_whitespace().next() == Some(ns.as_str())))
        .cloned()
        .collect();
    let link_exists = Command::new("ip")
        .args(["link", "show", link])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if link_exists {
        left.push(link.to_string());
    }
    left
}

#[test]
fn network_namespaces_go_with_a_sigkilled_parent() -> Result<()> {
    if !faultline::netns::usable_in_tests()? {
        return Ok(());
    }
    let (mut child, printed) = start_server(&["--netns", "2"])?;
    let namespaces: Vec<String> =
        printed.iter().filter_map(|l| l.strip_prefix("netns: ")).map(str::to_string).collect();
    let link = printed
        .iter()
        .find_map(|l| l.strip_prefix("root link: "))
        .context("no root link printed")?
        .to_string();
    let livekit = printed
        .iter()
        .find_map(|line| pid_after(line, "livekit-server pid:"))
        .context("no livekit-server pid printed")?;
    assert_eq!(namespaces.len(), 3, "a server and two client namespaces: {printed:#?}");
    let before = namespaces_left(&namespaces, &link);
    assert_eq!(before.len(), 4, "the namespaces and the root link exist while the parent lives");

    child.kill().context("SIGKILL faultline")?;
    child.wait()?;
    wait_gone(
        || {
            format!(
                "left behind: {:?}; livekit-server {livekit} alive: {}",
                namespaces_left(&namespaces, &link),
                process_alive(livekit)
            )
        },
        || namespaces_left(&namespaces, &link).is_empty() && !process_alive(livekit),
    )
}

/// SIGKILLs `child` (a `faultline run`) and waits until every process in `running` is gone.
fn sigkill_and_wait_gone(child: &mut Child, running: &[u32]) -> Result<()> {
    child.kill().context("SIGKILL faultline")?;
    child.wait()?;
    wait_gone(
        || {
            format!(
                "still running: {:?}",
                running.iter().filter(|p| process_alive(**p)).collect::<Vec<_>>()
            )
        },
        || running.iter().all(|pid| !process_alive(*pid)),
    )
}

/// Every process: pid, parent pid and command line (`ps -eo`, which Linux and macOS both
/// have).
fn processes() -> Vec<(u32, u32, String)> {
    let out = Command::new("ps").args(["-eo", "pid=,ppid=,args="]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let pid = words.next()?.parse().ok()?;
            let ppid = words.next()?.parse().ok()?;
            Some((pid, ppid, words.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// The pids of processes whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, _, args)| args.contains(needle) && !args.contains("ps -eo"))
        .map(|(pid, _, _)| pid)
        .collect()
}

/// The pids and command lines of `parent`'s children.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    processes()
        .into_iter()
        .filter(|(_, ppid, _)| *ppid == parent)
        .map(|(pid, _, args)| (pid, args))
        .collect()
}

#[test]
fn sdk_drivers_and_their_browser_die_with_a_sigkilled_parent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let scenario = dir.path().join("idle.toml");
    // Two external clients that sit in a room until a fault a minute away.
    std::fs::write(
        &scenario,
        "name = \"idle\"\n[[participant]]\nidentity = \"py\"\nsdk = \"upstream-rust\"\n\
         [[participant]]\nidentity = \"web\"\nsdk = \"js\"\n[[fault]]\nat = \"60s\"\n\
         target = \"py\"\ntype = \"simulate\"\nscenario = \"signal-reconnect\"\n",
    )?;
    let before: Vec<u32> = pids_with("--remote-debugging-pipe");
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("run")
        .arg(&scenario)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning faultline run")?;
    // A first run may prepare both SDKs in the cache: allow for that.
    let deadline = Instant::now() + Duration::from_secs(10 * 60);
    let running = loop {
        let drivers: Vec<u32> = ["upstream-rust-1.2.1/driver.py", "js-2.23.0/driver.mjs"]
            .iter()
            .flat_map(|needle| pids_with(needle))
            .collect();
        let browsers: Vec<u32> = pids_with("--remote-debugging-pipe")
            .into_iter()
            .filter(|pid| !before.contains(pid))
            .collect();
        if drivers.len() >= 2 && !browsers.is_empty() {
            break [drivers, browsers].concat();
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!("the run never had both drivers and a browser running: {drivers:?} {browsers:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    sigkill_and_wait_gone(&mut child, &running)
}

#[test]
fn a_clusters_nodes_and_redis_die_with_a_sigkilled_parent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let scenario = dir.path().join("cluster-idle.toml");
    // Two nodes on Redis, one client, nothing happening for a minute.
    std::fs::write(
        &scenario,
        "name = \"cluster-idle\"\nlanes = [\"real\"]\n[cluster]\nnodes = 2\n\
         [[participant]]\nidentity = \"a\"\n[[fault]]\nat = \"60s\"\ntype = \"node-kill\"\nnode = 0\n",
    )?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("run")
        .arg(&scenario)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning faultline run")?;
    let deadline = Instant::now() + Duration::from_secs(5 * 60);
    let running = loop {
        let servers: Vec<(u32, String)> = children_of(child.id())
            .into_iter()
            .filter(|(_, args)| args.contains("livekit-server") || args.contains("redis-server"))
            .collect();
        let nodes = servers.iter().filter(|(_, a)| a.contains("livekit-server")).count();
        if nodes == 2 && servers.len() == 3 {
            break servers.into_iter().map(|(pid, _)| pid).collect::<Vec<_>>();
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!("the run never had Redis and two nodes running: {servers:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    sigkill_and_wait_gone(&mut child, &running)
}
