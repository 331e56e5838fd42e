//! Versions: the canonical `vMAJOR.MINOR.PATCH` form, and whether a binary is the version
//! asked for.

use std::path::Path;
use std::time::Duration;

use super::command::{command, is_executable, run_bounded};
use super::{Program, ProvisionEnv, ProvisionError};

/// Normalizes `1.2.3` / `v1.2.3` to `v1.2.3`, rejecting anything else.
pub fn canonical_version(version: &str) -> Result<String, ProvisionError> {
    let bare = version.trim().trim_start_matches('v');
    let parts: Vec<&str> = bare.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    if parts.len() == 3 && parts.iter().all(numeric) {
        Ok(format!("v{bare}"))
    } else {
        Err(ProvisionError::InvalidVersion(version.to_string()))
    }
}

/// The first `MAJOR.MINOR.PATCH` in `text`, as `vMAJOR.MINOR.PATCH`.
fn find_version(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .find_map(|word| canonical_version(word).ok())
}

/// Checks that `bin` is `program` at `version`. Ok carries a description.
pub(super) async fn check_binary(
    program: Program,
    bin: &Path,
    version: &str,
    env: &ProvisionEnv,
) -> Result<String, String> {
    if !is_executable(bin) {
        return Err(format!("{} is not an executable file", bin.display()));
    }
    // A `go install` build reports its module version in its build info; release builds
    // report it through the version flag (toxiproxy's flag says "git" when built by go).
    if let Some(go) = env.find_on_path("go") {
        let mut cmd = command(&go, env);
        cmd.arg("version").arg("-m").arg(bin);
        if let Ok((true, out)) = run_bounded(cmd, Duration::from_secs(10)).await {
            let module = out.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("mod") && words.next() == Some(program.go_module()))
                    .then(|| words.next().and_then(|v| canonical_version(v).ok()))
                    .flatten()
            });
            if let Some(found) = module {
                return version_verdict(bin, &found, version, "go build info");
            }
        }
    }
    let mut cmd = command(bin, env);
    cmd.arg(program.version_flag());
    let (_, out) = run_bounded(cmd, Duration::from_secs(10))
        .await
        .map_err(|e| format!("{} {}: {e}", bin.display(), program.version_flag()))?;
    match find_version(&out) {
        Some(found) => version_verdict(bin, &found, version, program.version_flag()),
        None => Err(format!(
            "{} {} printed no version ({out:?}); cannot tell whether it is {version}",
            bin.display(),
            program.version_flag()
        )),
    }
}

fn version_verdict(bin: &Path, found: &str, wanted: &str, how: &str) -> Result<String, String> {
    if found == wanted {
        Ok(format!("{} is {found} ({how})", bin.display()))
    } else {
        Err(format!("{} is {found} ({how}), not the requested {wanted}", bin.display()))
    }
}
