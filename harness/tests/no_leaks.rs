//! A process that started livekit-server and toxiproxy and is then SIGKILLed (so none of
//! its destructors run) leaves neither program running.
//!
//! It lives in the harness package because it runs the `faultline` binary, which cargo
//! builds (and names in `CARGO_BIN_EXE_faultline`) only for this package's own tests.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use faultline::supervise::process_alive;

fn pid_after(line: &str, prefix: &str) -> Option<u32> {
    line.strip_prefix(prefix).and_then(|rest| rest.trim().parse().ok())
}

#[test]
fn servers_die_with_a_sigkilled_parent() -> Result<()> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["server", "--toxiproxy"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning faultline server --toxiproxy")?;
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
    let (mut livekit, mut toxiproxy) = (None, None);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                bail!("faultline server did not report ready: {e}");
            }
        };
        livekit = livekit.or_else(|| pid_after(&line, "livekit-server pid:"));
        toxiproxy = toxiproxy.or_else(|| pid_after(&line, "toxiproxy pid:"));
        if line.starts_with("ready") {
            break;
        }
    }
    let (livekit, toxiproxy) = (
        livekit.context("no livekit-server pid printed")?,
        toxiproxy.context("no toxiproxy pid printed")?,
    );
    assert!(
        process_alive(livekit) && process_alive(toxiproxy),
        "servers not running while the parent lives"
    );

    child.kill().context("SIGKILL faultline")?;
    child.wait()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(livekit) || process_alive(toxiproxy) {
        if Instant::now() > deadline {
            bail!(
                "10 s after SIGKILL of their parent: livekit-server {livekit} alive: {}, \
                 toxiproxy {toxiproxy} alive: {}",
                process_alive(livekit),
                process_alive(toxiproxy)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
