//! Makes and inspects field fixtures (`faultline import` writes the scenarios):
//!
//! ```text
//! cargo run -p faultline --example field -- FILE                 # the timeline's findings, JSON
//! cargo run -p faultline --example field -- redact DUMP OUT [--trim]
//! cargo run -p faultline --example field -- redact-log LOG OUT
//! ```
//!
//! `redact` writes a chrome://webrtc-internals dump with no addresses, SDP, credentials or
//! page URLs (see `faultline::field::redact::redact_dump`), fit for `fixtures/field/`; with
//! `--trim`, only the series the parser reads are kept. `redact-log` does the same for a log,
//! line by line (`faultline::field::redact::redact`).

use std::process::ExitCode;

use faultline::field;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("field: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    match args {
        [cmd, input, output, rest @ ..] if cmd == "redact" => {
            let trim = rest.iter().any(|a| a == "--trim");
            let dump: serde_json::Value = serde_json::from_slice(&std::fs::read(input)?)?;
            let redacted = field::redact::redact_dump(&dump, trim);
            let text = serde_json::to_string_pretty(&redacted)?;
            anyhow::ensure!(field::redact::is_clean(&text), "the redacted dump is not clean");
            std::fs::write(output, text)?;
            Ok(())
        }
        [cmd, input, output] if cmd == "redact-log" => {
            let text = String::from_utf8_lossy(&std::fs::read(input)?).into_owned();
            let mut out = String::new();
            for line in text.lines() {
                let line = field::redact::redact(line);
                anyhow::ensure!(field::redact::is_clean(&line), "a redacted line is not clean");
                out.push_str(&line);
                out.push('\n');
            }
            std::fs::write(output, out)?;
            Ok(())
        }
        [input] => {
            let timeline = field::read(std::path::Path::new(input))?;
            let derived = field::derive::derive(&timeline);
            let out = serde_json::json!({
                "source": timeline.source,
                "peer_connections": timeline.peer_connections.iter().map(|pc| serde_json::json!({
                    "id": pc.id, "created_ms": pc.created_ms, "closed_ms": pc.closed_ms,
                    "samples": pc.bytes_received.len(), "states": pc.states.len(),
                })).collect::<Vec<_>>(),
                "lifecycle": timeline.lifecycle,
                "derived": derived,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        _ => anyhow::bail!(
            "usage: field FILE | field redact DUMP OUT [--trim] | field redact-log LOG OUT"
        ),
    }
}
