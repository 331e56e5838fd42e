//! `scripts/sdk-matrix`, the steps of the GitHub action (`action.yml`) that an SDK repository
//! calls: it runs the matrix, appends the table to the job summary, and with a baseline fails
//! only on a regression against it — a cell that fails the same way as in the baseline is the
//! SDK's known difference, not a regression; bad input exits 2.
//!
//! In the harness package because it runs the `faultline` binary cargo builds for this
//! package's tests (`CARGO_BIN_EXE_faultline`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

/// A scenario that fails every time, quickly: nothing happens, and it expects the room to end
/// disconnected.
const FAILS: &str = r#"name = "quiet"
description = "Nothing happens; the file expects the room to end disconnected, which it does not."
lanes = ["real"]
settle = "1s"

[[participant]]
identity = "a"

[[expect]]
type = "final-state"
participant = "a"
state = "disconnected"
"#;

/// Runs the script with `args` (for faultline-sdk, on the scenarios in `dir`), its outputs in
/// `dir/<out>`; returns its exit status, what it printed, and the job summary it wrote.
fn sdk_matrix(dir: &Path, out: &str, args: &[&str]) -> Result<(Option<i32>, String, String)> {
    let summary = dir.join(format!("{out}-summary.md"));
    let output = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/sdk-matrix"))
        .args(["--out", &dir.join(out).display().to_string()])
        .args(args)
        .env("FAULTLINE_BIN", env!("CARGO_BIN_EXE_faultline"))
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .context("running scripts/sdk-matrix")?;
    let mut said = String::from_utf8_lossy(&output.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&output.stderr));
    let summary = std::fs::read_to_string(&summary).unwrap_or_default();
    Ok((output.status.code(), said, summary))
}

#[test]
fn the_action_script_reports_the_matrix_and_fails_only_on_a_regression() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir(&scenarios)?;
    std::fs::write(scenarios.join("quiet.toml"), FAILS)?;
    let scenarios = scenarios.display().to_string();
    let run = ["--sdk", "faultline", "--scenarios", scenarios.as_str()];

    // No baseline: the matrix's own status, the table in the summary.
    let (code, said, summary) = sdk_matrix(dir.path(), "first", &run)?;
    assert_eq!(code, Some(1), "a failing cell and no baseline: {said}");
    assert!(summary.contains("## faultline matrix: faultline"), "{summary}");
    assert!(summary.contains("| quiet | **FAIL** 1/2"), "{summary}");

    // The same failure in the baseline: a known difference, not a regression.
    let known = dir.path().join("first/matrix.json").display().to_string();
    let (code, said, summary) =
        sdk_matrix(dir.path(), "again", &[&run[..], &["--baseline", known.as_str()]].concat())?;
    assert_eq!(code, Some(0), "failing as the baseline did: {said}");
    assert!(summary.contains("1 cells compared: 0 regressed"), "{summary}");

    // A baseline in which it passed: a regression.
    let passed = dir.path().join("passed.json");
    std::fs::write(&passed, as_if_it_passed(&std::fs::read_to_string(&known)?)?)?;
    let passed = passed.display().to_string();
    let (code, said, summary) =
        sdk_matrix(dir.path(), "worse", &[&run[..], &["--baseline", passed.as_str()]].concat())?;
    assert_eq!(code, Some(1), "a regression fails: {said}");
    assert!(summary.contains("**REGRESSED** pass 2/2 → fail 1/2"), "{summary}");

    // Bad input exits 2, saying what is wrong.
    let (code, said, _) = sdk_matrix(dir.path(), "bad", &["--sdk", "nope"])?;
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("unknown SDK nope"), "{said}");
    let (code, said, _) = sdk_matrix(
        dir.path(),
        "bad",
        &[&run[..], &["--baseline", "/nonexistent/matrix.json"]].concat(),
    )?;
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("no baseline file /nonexistent/matrix.json"), "{said}");
    Ok(())
}

/// A saved matrix with every cell that ran turned into a pass.
fn as_if_it_passed(text: &str) -> Result<String> {
    let mut value: serde_json::Value = serde_json::from_str(text)?;
    for row in value["rows"].as_array_mut().context("rows")? {
        for cell in row["cells"].as_array_mut().context("cells")? {
            cell["state"] = "pass".into();
            cell["passed"] = cell["total"].clone();
            cell["failures"] = serde_json::json!([]);
        }
    }
    Ok(value.to_string())
}
