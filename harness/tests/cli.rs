//! The `faultline` command's doctor and server subcommands report missing sources and bad
//! input clearly, with a failing exit status.

use std::process::Command;

use anyhow::Result;

fn faultline(args: &[&str], cache: &std::path::Path) -> Result<(bool, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .env("PATH", "")
        .env("FAULTLINE_CACHE", cache)
        .env_remove("LIVEKIT_URL")
        .env_remove("LIVEKIT_SERVER_BIN")
        .env_remove("TOXIPROXY_SERVER_BIN")
        .output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

#[test]
fn doctor_fails_and_says_how_to_fix_it_when_no_source_works() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let (ok, text) = faultline(&["doctor"], cache.path())?;
    assert!(!ok, "doctor succeeded without any source:\n{text}");
    assert!(text.contains("livekit-server v1.13.5: NO SOURCE"), "{text}");
    assert!(text.contains("toxiproxy-server v2.12.0: NO SOURCE"), "{text}");
    assert!(text.contains("go:           not found on PATH"), "{text}");
    assert!(text.contains("fix: install Go >= 1.26"), "{text}");
    Ok(())
}

#[test]
fn server_fails_with_the_provisioning_report_when_no_source_works() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let (ok, text) = faultline(&["server", "--version", "v1.13.5"], cache.path())?;
    assert!(!ok, "{text}");
    assert!(text.contains("no source could provide livekit-server v1.13.5"), "{text}");
    assert!(text.contains("go not found on PATH"), "{text}");

    let (ok, text) = faultline(&["server", "--version", "latest"], cache.path())?;
    assert!(!ok, "{text}");
    assert!(text.contains("version \"latest\" is not of the form v1.2.3"), "{text}");
    Ok(())
}
