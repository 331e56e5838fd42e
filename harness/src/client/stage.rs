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
        cmd.args(&step.args).current_dir(dir);
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
