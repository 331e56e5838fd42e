//! A process that started livekit-server and toxiproxy, network namespaces, SDK drivers (and
//! the browser one of them runs), or a cluster's nodes and Redis leaves none of them behind,
//! however it ends: SIGKILLed (so none of its destructors run), or sent SIGINT or SIGTERM with
//! its whole process group, as a person's Ctrl-C and CI's `timeout` do — then it says it was
//! interrupted and exits 130 or 143.
//!
//! It lives in the harness package because it runs the `faultline` binary, which cargo
//! builds (and names in `CARGO_BIN_EXE_faultline`) only for this package's own tests.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use faultline::supervise::process_alive;

/// How a test ends the `faultline` process.
#[derive(Debug, Clone, Copy)]
enum End {
    /// SIGKILL to the process alone: no destructor runs, only the watchdogs.
    Kill,
    /// SIGINT to its process group, as a terminal's Ctrl-C sends it.
    Interrupt,
    /// SIGTERM to its process group, as `timeout` sends it.
    Terminate,
}

/// A `faultline` command in a process group of its own (so that signals to the group do not
/// reach the test), its stderr collected.
fn faultline(args: &[&std::ffi::OsStr], stdout: Stdio) -> Result<(Child, mpsc::Receiver<String>)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawning faultline {args:?}"))?;
    let mut stderr = child.stderr.take().context("stderr is piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    Ok((child, rx))
}

/// Ends `child` as `end` says and checks how it exited: killed by SIGKILL; or, for a group's
/// signal, with the shell's status for it (130, 143) and a word that it was interrupted —
/// except `faultline server` on SIGINT, its ordinary stop (`ctrl_c_stops` = true): status 0.
fn end(
    child: &mut Child,
    stderr: &mpsc::Receiver<String>,
    how: End,
    ctrl_c_stops: bool,
) -> Result<()> {
    let group = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .context("the child's pid")?;
    let signal = match how {
        End::Kill => {
            child.kill().context("SIGKILL faultline")?;
            None
        }
        End::Interrupt => Some(("SIGINT", rustix::process::Signal::INT, 130)),
        End::Terminate => Some(("SIGTERM", rustix::process::Signal::TERM, 143)),
    };
    if let Some((_, signal, _)) = signal {
        rustix::process::kill_process_group(group, signal).context("signalling the group")?;
    }
    let status = child.wait()?;
    let said = stderr.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    match signal {
        None => ensure!(status.signal() == Some(9), "SIGKILLed faultline exited {status:?}"),
        Some(("SIGINT", _, _)) if ctrl_c_stops => {
            ensure!(status.code() == Some(0), "Ctrl-C stops faultline server: {status:?}\n{said}");
        }
        Some((name, _, code)) => {
            ensure!(
                status.code() == Some(code),
                "faultline after {name} to its group exited {status:?}, expected {code}:\n{said}"
            );
            ensure!(
                said.contains(&format!("interrupted by {name}")),
                "faultline did not say it was interrupted by {name}:\n{said}"
            );
        }
    }
    Ok(())
}

fn pid_after(line: &str, prefix: &str) -> Option<u32> {
    line.strip_prefix(prefix).and_then(|rest| rest.trim().parse().ok())
}

/// Starts `faultline server <args>` and returns it, its stderr, and every line it printed up
/// to `ready`.
fn start_server(args: &[&str]) -> Result<(Child, mpsc::Receiver<String>, Vec<String>)> {
    let mut all: Vec<&std::ffi::OsStr> = vec!["server".as_ref()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    let (mut child, stderr) = faultline(&all, Stdio::piped())?;
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
            Ok(line) if line.starts_with("ready") => return Ok((child, stderr, printed)),
            Ok(line) => printed.push(line),
            Err(e) => {
                let _ = child.kill();
                bail!("faultline server did not report ready: {e}; it printed {printed:#?}");
            }
        }
    }
}

/// Polls `gone` every 100 ms for up to 10 s after the parent ended.
fn wait_gone(how: End, what: impl Fn() -> String, gone: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone() {
        if Instant::now() > deadline {
            bail!("10 s after their parent ended ({how:?}): {}", what());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn servers_die_with_a_sigkilled_parent() -> Result<()> {
    servers_die_with_their_parent(End::Kill)
}

#[test]
fn servers_stop_when_their_parent_is_interrupted() -> Result<()> {
    servers_die_with_their_parent(End::Interrupt)
}

#[test]
fn servers_stop_when_their_parent_is_terminated() -> Result<()> {
    servers_die_with_their_parent(End::Terminate)
}

fn servers_die_with_their_parent(how: End) -> Result<()> {
    let (mut child, stderr, printed) = start_server(&["--toxiproxy"])?;
    let pid = |prefix| printed.iter().find_map(|line| pid_after(line, prefix));
    let livekit = pid("livekit-server pid:").context("no livekit-server pid printed")?;
    let toxiproxy = pid("toxiproxy pid:").context("no toxiproxy pid printed")?;
    assert!(
        process_alive(livekit) && process_alive(toxiproxy),
        "servers not running while the parent lives"
    );

    end(&mut child, &stderr, how, true)?;
    wait_gone(
        how,
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
    network_namespaces_go_with_their_parent(End::Kill)
}

#[test]
fn network_namespaces_go_when_their_parent_is_terminated() -> Result<()> {
    network_namespaces_go_with_their_parent(End::Terminate)
}

fn network_namespaces_go_with_their_parent(how: End) -> Result<()> {
    if !faultline::netns::usable_in_tests()? {
        return Ok(());
    }
    let (mut child, stderr, printed) = start_server(&["--netns", "2"])?;
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

    end(&mut child, &stderr, how, true)?;
    wait_gone(
        how,
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

/// Ends `child` (a `faultline run`) as `how` says and waits until every process in `running`
/// is gone.
fn end_and_wait_gone(
    child: &mut Child,
    stderr: &mpsc::Receiver<String>,
    how: End,
    running: &[u32],
) -> Result<()> {
    end(child, stderr, how, false)?;
    wait_gone(
        how,
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
    sdk_drivers_and_their_browser_die_with_their_parent(End::Kill)
}

#[test]
fn sdk_drivers_and_their_browser_stop_when_their_parent_is_interrupted() -> Result<()> {
    sdk_drivers_and_their_browser_die_with_their_parent(End::Interrupt)
}

#[test]
fn sdk_drivers_and_their_browser_stop_when_their_parent_is_terminated() -> Result<()> {
    sdk_drivers_and_their_browser_die_with_their_parent(End::Terminate)
}

fn sdk_drivers_and_their_browser_die_with_their_parent(how: End) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let scenario = dir.path().join("idle.toml");
    // Three external clients that sit in a room until a fault a minute away.
    std::fs::write(
        &scenario,
        "name = \"idle\"\n[[participant]]\nidentity = \"py\"\nsdk = \"upstream-rust\"\n\
         [[participant]]\nidentity = \"web\"\nsdk = \"js\"\n\
         [[participant]]\nidentity = \"bot\"\nsdk = \"go\"\n[[fault]]\nat = \"60s\"\n\
         target = \"py\"\ntype = \"simulate\"\nscenario = \"signal-reconnect\"\n",
    )?;
    let before: Vec<u32> = pids_with("--remote-debugging-pipe");
    let (mut child, stderr) = faultline(&["run".as_ref(), scenario.as_os_str()], Stdio::null())?;
    // A first run may prepare the SDKs in the cache: allow for that.
    let deadline = Instant::now() + Duration::from_secs(10 * 60);
    let running = loop {
        let drivers: Vec<u32> = [
            "upstream-rust-1.2.1/driver.py",
            "js-2.23.0/driver.mjs",
            "go-2.19.0/faultline-go-driver",
        ]
        .iter()
        .flat_map(|needle| pids_with(needle))
        .collect();
        let browsers: Vec<u32> = pids_with("--remote-debugging-pipe")
            .into_iter()
            .filter(|pid| !before.contains(pid))
            .collect();
        if drivers.len() >= 3 && !browsers.is_empty() {
            break [drivers, browsers].concat();
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!("the run never had all three drivers and a browser running: {drivers:?} {browsers:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    end_and_wait_gone(&mut child, &stderr, how, &running)
}

#[test]
fn a_clusters_nodes_and_redis_die_with_a_sigkilled_parent() -> Result<()> {
    a_clusters_nodes_and_redis_die_with_their_parent(End::Kill)
}

#[test]
fn a_clusters_nodes_and_redis_stop_when_their_parent_is_interrupted() -> Result<()> {
    a_clusters_nodes_and_redis_die_with_their_parent(End::Interrupt)
}

fn a_clusters_nodes_and_redis_die_with_their_parent(how: End) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let scenario = dir.path().join("cluster-idle.toml");
    // Two nodes on Redis, one client, nothing happening for a minute.
    std::fs::write(
        &scenario,
        "name = \"cluster-idle\"\nlanes = [\"real\"]\n[cluster]\nnodes = 2\n\
         [[participant]]\nidentity = \"a\"\n[[fault]]\nat = \"60s\"\ntype = \"node-kill\"\nnode = 0\n",
    )?;
    let (mut child, stderr) = faultline(&["run".as_ref(), scenario.as_os_str()], Stdio::null())?;
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
    end_and_wait_gone(&mut child, &stderr, how, &running)
}
