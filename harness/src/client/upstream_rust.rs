//! The `upstream-rust` client: the upstream LiveKit Rust SDK as it ships in the PyPI
//! `livekit` wheel (`liblivekit_ffi.so`), driven through the wheel's own Python API by
//! `harness/drivers/upstream_rust/driver.py`.
//!
//! Why the Python API and not the `.so`'s C ABI from Rust: loading a shared library and
//! calling into it needs `unsafe`, which this workspace forbids, and the FFI's protobuf
//! messages would have to be regenerated from the wheel's descriptors for every pin. The
//! wheel's Python layer is what its users call; it adds no reconnect logic of its own (the
//! engine is in the `.so`), so the events faultline sees are the Rust SDK's.
//!
//! Provisioned on first use: a venv in `<cache>/drivers/upstream-rust-<pin>/venv` built with
//! `python3 -m venv` and `pip install -r requirements.txt` (exact pins), once, under the
//! cache lock.
//!
//! A developer's own build of the native library runs instead of the wheel's copy when
//! `LIVEKIT_LIB_PATH` (the wheel's own variable) names it, and another published wheel when
//! `FAULTLINE_UPSTREAM_RUST_VERSION` does (a venv of its own,
//! `<cache>/drivers/upstream-rust-<version>`); the driver's hello names the library and its
//! hash.

use std::path::PathBuf;

use super::stage::{self, Step};
use super::{ClientError, Sdk};
use crate::provision::ProvisionEnv;
use crate::supervise::Launch;

/// The pinned `livekit` wheel.
pub const LIVEKIT_WHEEL_VERSION: &str = "1.2.1";

const DRIVER: &str = include_str!("../../drivers/upstream_rust/driver.py");
const REQUIREMENTS: &str = include_str!("../../drivers/upstream_rust/requirements.txt");

/// The driver's directory in the cache (one per wheel version).
fn dir(env: &ProvisionEnv) -> PathBuf {
    let version = env.upstream_rust_version.as_deref().unwrap_or(LIVEKIT_WHEEL_VERSION);
    stage::dir(env, &format!("upstream-rust-{version}"))
}

/// What the venv installs: the pinned requirements, or — for the version
/// `FAULTLINE_UPSTREAM_RUST_VERSION` names — that `livekit` wheel with whatever dependencies
/// pip resolves for it (the pins are the pinned wheel's).
fn requirements(env: &ProvisionEnv) -> Result<String, ClientError> {
    let Some(version) = &env.upstream_rust_version else { return Ok(REQUIREMENTS.to_owned()) };
    stage::exact_version(
        Sdk::UpstreamRust,
        "FAULTLINE_UPSTREAM_RUST_VERSION",
        version,
        "pip index versions livekit",
    )?;
    Ok(format!(
        "# FAULTLINE_UPSTREAM_RUST_VERSION: the PyPI livekit wheel {version}, its dependencies as \
         pip resolves them.\nlivekit=={version}\n"
    ))
}

/// Whether the client can run here, without preparing anything: a sentence saying what is
/// prepared or what first use will do, or why it cannot run.
pub fn readiness(env: &ProvisionEnv) -> Result<String, ClientError> {
    let python = python(env)?;
    let local = local_library(env)?
        .map(|l| format!("; loads the local library {} (LIVEKIT_LIB_PATH)", l.display()))
        .unwrap_or_default();
    let requirements = requirements(env)?;
    let version = env.upstream_rust_version.as_deref().unwrap_or(LIVEKIT_WHEEL_VERSION);
    let dir = dir(env);
    Ok(if stage::is_ready(&dir, &requirements) {
        format!("livekit {version} prepared in {}{local}", dir.display())
    } else {
        format!(
            "first use builds a venv with {} and pip-installs livekit {version} into {}{local}",
            python.display(),
            dir.display()
        )
    })
}

/// The pinned wheel's own `liblivekit_ffi` in the cache (there once the client is prepared).
pub(crate) fn pinned_library(env: &ProvisionEnv) -> Option<PathBuf> {
    let lib = dir(env).join("venv").join("lib");
    std::fs::read_dir(&lib).ok()?.flatten().find_map(|python| {
        let resources = python.path().join("site-packages/livekit/rtc/resources");
        std::fs::read_dir(resources).ok()?.flatten().map(|entry| entry.path()).find(|path| {
            path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("liblivekit_ffi"))
        })
    })
}

/// The native library `LIVEKIT_LIB_PATH` names, checked to be a file and made absolute: the
/// wheel's Python layer loads it instead of its own copy.
fn local_library(env: &ProvisionEnv) -> Result<Option<PathBuf>, ClientError> {
    let Some(given) = &env.livekit_lib else { return Ok(None) };
    let refused = |why: String| ClientError::LocalBuild {
        sdk: Sdk::UpstreamRust,
        variable: "LIVEKIT_LIB_PATH",
        path: given.clone(),
        why,
        expected: "a liblivekit_ffi shared library (e.g. target/release/liblivekit_ffi.so of a \
                   rust-sdks build)",
    };
    if !given.is_file() {
        return Err(refused(if given.is_dir() {
            "it is a directory, not the library file".into()
        } else {
            "no such file".into()
        }));
    }
    std::path::absolute(given).map(Some).map_err(|e| refused(e.to_string()))
}

/// Builds the venv if needed and returns how to start the driver.
pub(crate) async fn prepare(env: &ProvisionEnv) -> Result<Launch, ClientError> {
    let sdk = Sdk::UpstreamRust;
    let python = python(env)?;
    let library = local_library(env)?;
    let requirements = requirements(env)?;
    let dir = dir(env);
    let venv = dir.join("venv");
    let venv_python = venv.join("bin").join("python");
    let steps = [
        Step {
            program: python.clone(),
            args: vec!["-m".into(), "venv".into(), "--clear".into(), venv.clone().into()],
            log_name: "upstream-rust-venv".into(),
            env: Vec::new(),
        },
        Step {
            program: venv_python.clone(),
            args: vec![
                "-m".into(),
                "pip".into(),
                "install".into(),
                "--disable-pip-version-check".into(),
                "--no-input".into(),
                "-r".into(),
                dir.join("requirements.txt").into(),
            ],
            log_name: "upstream-rust-pip-install".into(),
            env: Vec::new(),
        },
    ];
    let files = [("driver.py", DRIVER), ("requirements.txt", requirements.as_str())];
    stage::ensure(sdk, env, &dir, &files, &requirements, &steps).await?;
    let mut launch =
        Launch::new(venv_python, vec!["-u".into(), dir.join("driver.py").into_os_string()]);
    launch.env.push(("PYTHONUNBUFFERED".into(), "1".into()));
    launch.env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    // Set (or cleared) explicitly: the environment given, not the process's, decides.
    let library = library.map(PathBuf::into_os_string).unwrap_or_default();
    launch.env.push(("LIVEKIT_LIB_PATH".into(), library));
    launch.group = true;
    Ok(launch)
}

/// The oldest Python the pinned requirements install on (numpy 2.4 needs 3.11).
const MIN_PYTHON: (u32, u32) = (3, 11);

/// The Python that builds the venv: `FAULTLINE_PYTHON`, else `python3` on `PATH`; checked
/// to be [`MIN_PYTHON`] or later.
fn python(env: &ProvisionEnv) -> Result<PathBuf, ClientError> {
    let fix = format!(
        "install Python {}.{}+ with venv (Debian/Ubuntu: `apt-get install python3 \
         python3-venv`) or set FAULTLINE_PYTHON to such an interpreter",
        MIN_PYTHON.0, MIN_PYTHON.1
    );
    let unavailable = |missing: String| ClientError::Unavailable {
        sdk: Sdk::UpstreamRust,
        missing,
        fix: fix.clone(),
    };
    let python = match env.python.clone().or_else(|| env.find_on_path("python3")) {
        Some(python) => python,
        None => return Err(unavailable("python3 is not on PATH".into())),
    };
    let output = crate::provision::command_std(&python, env)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .map_err(|e| unavailable(format!("{} does not run: {e}", python.display())))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .trim()
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)));
    match version {
        Some(version) if version >= MIN_PYTHON => Ok(python),
        Some((major, minor)) => Err(unavailable(format!(
            "{} is Python {major}.{minor}; the pinned livekit wheel's dependencies need {}.{}+",
            python.display(),
            MIN_PYTHON.0,
            MIN_PYTHON.1
        ))),
        None => Err(unavailable(format!(
            "{} did not say its version (it printed {text:?})",
            python.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_library_must_be_a_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let with = |path: PathBuf| ProvisionEnv {
            livekit_lib: Some(path),
            ..ProvisionEnv::isolated("/nonexistent-cache")
        };
        let refused = |path: PathBuf| match local_library(&with(path)) {
            Err(e) => e.to_string(),
            Ok(found) => panic!("accepted {found:?}"),
        };
        assert!(refused(dir.path().to_owned()).contains("it is a directory, not the library file"));
        assert!(refused(dir.path().join("liblivekit_ffi.so")).contains("no such file"));
        let lib = dir.path().join("liblivekit_ffi.so");
        std::fs::write(&lib, b"\x7fELF").expect("the library");
        assert_eq!(local_library(&with(lib.clone())).expect("a file"), Some(lib));
    }
}
