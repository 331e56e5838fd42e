//! Preparing an external SDK's driver in the faultline cache: a directory holding the
//! driver's files (written from the copies compiled into faultline) and whatever its setup
//! steps install there (a Python venv, `node_modules`). Setup runs once per pin, across
//! processes, under the cache's lock; a marker file records the pins it was done for, so a
//! changed pin sets it up again.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{ClientError, Sdk};
use crate::provision::{BuildStep, CacheLock, ProvisionEnv};

/// One setup command.
#[derive(Debug)]
pub(crate) struct Step {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Its log file's name (without `.log`).
    pub log_name: String,
    /// Environment variables it needs set.
    pub env: Vec<(&'static str, &'static str)>,
}

/// The file recording the pins a directory was set up for.
const MARKER: &str = ".faultline-ready";

/// Whether `dir` was set up for exactly `pins`.
pub(crate) fn is_ready(dir: &Path, pins: &str) -> bool {
    std::fs::read_to_string(dir.join(MARKER)).is_ok_and(|done| done == pins)
}

/// The driver's directory in the cache: `<cache>/drivers/<name>`.
pub(crate) fn dir(env: &ProvisionEnv, name: &str) -> PathBuf {
    env.cache_dir.join("drivers").join(name)
}

/// Makes `dir` hold `files` and, unless it was already set up for `pins`, runs `steps` in it.
pub(crate) async fn ensure(
    sdk: Sdk,
    env: &ProvisionEnv,
    dir: &Path,
    files: &[(&str, &str)],
    pins: &str,
    steps: &[Step],
) -> Result<(), ClientError> {
    let failed = |message: String| ClientError::Provision { sdk, message };
    std::fs::create_dir_all(dir)
        .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
    for (name, contents) in files {
        write_if_changed(&dir.join(name), contents).map_err(failed)?;
    }
    if is_ready(dir, pins) {
        return Ok(());
    }
    let what = format!("the {sdk} client");
    let lock_name = format!("driver-{}", dir.file_name().unwrap_or_default().to_string_lossy());
    let lock = CacheLock::acquire(env, &lock_name, &what).await.map_err(failed)?;
    if is_ready(dir, pins) {
        return Ok(());
    }
    for step in steps {
        let mut cmd = crate::provision::command(&step.program, env);
        cmd.args(&step.args).current_dir(dir).envs(step.env.iter().copied());
        let how = format!(
            "`{} {}`",
            step.program.display(),
            step.args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
        );
        let build = BuildStep { what: &what, how, log_name: step.log_name.clone(), into: dir };
        build.run(cmd, env).await.map_err(failed)?;
    }
    let marker = dir.join(MARKER);
    std::fs::write(&marker, pins)
        .map_err(|e| failed(format!("cannot write {}: {e}", marker.display())))?;
    drop(lock);
    Ok(())
}

/// Writes `contents` to `path` unless it already holds them (through a temporary file and a
/// rename, so a concurrent reader never sees half a file).
fn write_if_changed(path: &Path, contents: &str) -> Result<(), String> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(parent)
        .map_err(|e| format!("cannot create a file in {}: {e}", parent.display()))?;
    std::io::Write::write_all(&mut temp, contents.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    temp.persist(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// Checks that `value` (of `variable`) is an exact version, `1.2.3` or `1.2.3-rc.1`: a cache
/// directory is set up once per version, so a moving tag (`latest`) would go stale there.
pub(crate) fn exact_version(
    sdk: Sdk,
    variable: &'static str,
    value: &str,
    newest: &str,
) -> Result<(), ClientError> {
    let (release, pre) = value.split_once('-').unwrap_or((value, ""));
    let numbers: Vec<&str> = release.split('.').collect();
    let exact = numbers.len() == 3
        && numbers.iter().all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && pre.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
        && !(value.contains('-') && pre.is_empty());
    if exact {
        return Ok(());
    }
    Err(ClientError::Version {
        sdk,
        variable,
        value: value.to_owned(),
        why: "not an exact version (MAJOR.MINOR.PATCH, optionally -PRERELEASE)".into(),
        fix: format!("name one exactly; the newest published is what `{newest}` prints"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_versions_name_a_cache_directory() {
        for good in ["2.23.0", "1.2.10", "2.24.0-rc.1"] {
            assert!(exact_version(Sdk::Js, "V", good, "npm view x version").is_ok(), "{good}");
        }
        for bad in ["latest", "2.x", "^2.23.0", "2.23", "2.23.0-", "../2.23.0", ""] {
            let refused = exact_version(Sdk::Js, "V", bad, "npm view x version");
            assert!(
                refused.as_ref().is_err_and(|e| e.to_string().contains("not an exact version")),
                "{bad}: {refused:?}"
            );
        }
    }
}
