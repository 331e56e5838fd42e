//! The `go install` source: building the pinned version from its Go module into the cache.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::build::{BuildStep, CacheLock};
use super::command::{command, is_executable, last_line, run_bounded};
use super::order::Search;
use super::{Program, ProvisionEnv, Source};

/// Builds the program with `go install` when Go is on `PATH` (in a survey, only asks Go
/// its version), recording the attempt. A build another process finished meanwhile is
/// recorded as the cache.
pub(super) async fn find(search: &mut Search<'_>) -> Option<Source> {
    let (program, version, env) = (search.program, search.version, search.env);
    let Some(go) = env.find_on_path("go") else {
        let env_var = program.bin_env_var();
        let detail = format!("go not found on PATH; install Go >= 1.26 or set {env_var}");
        search.record("go install", false, detail);
        return None;
    };
    if search.surveying() {
        match go_version(&go, env).await {
            Ok(go_version) => search.record(
                "go install",
                true,
                format!("{} ({go_version}) can build {program} {version}", go.display()),
            ),
            Err(reason) => {
                search.record("go install", false, format!("{}: {reason}", go.display()))
            }
        }
        return None;
    }
    match go_install(program, version, env, &go).await {
        Ok(GoInstalled::Built(bin, elapsed)) => {
            let detail = format!("built {} in {:.0?}", bin.display(), elapsed);
            search.choose("go install", detail, Source::GoInstall(bin))
        }
        Ok(GoInstalled::BuiltByOther(bin)) => {
            let detail = format!("{} (built concurrently)", bin.display());
            search.choose("cache", detail, Source::Cache(bin))
        }
        Err(reason) => {
            search.record("go install", false, reason);
            None
        }
    }
}

enum GoInstalled {
    Built(PathBuf, Duration),
    BuiltByOther(PathBuf),
}

/// Builds `program` at `version` with `go install` into the cache, once across processes.
async fn go_install(
    program: Program,
    version: &str,
    env: &ProvisionEnv,
    go: &Path,
) -> Result<GoInstalled, String> {
    let target = env.cached_binary(program, version);
    let bin_dir = env.cache_dir.join("bin");
    std::fs::create_dir_all(&bin_dir)
        .map_err(|e| format!("cannot create {}: {e}", bin_dir.display()))?;
    let what = format!("{program} {version}");
    let lock =
        CacheLock::acquire(env, &format!("{}-{version}", program.binary_name()), &what).await?;
    // The lock is released when `lock` is dropped, on every return path below.
    if is_executable(&target) {
        return Ok(GoInstalled::BuiltByOther(target));
    }

    let gobin = tempfile::Builder::new()
        .prefix("gobin-")
        .tempdir_in(&env.cache_dir)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", env.cache_dir.display()))?;
    let package = format!("{}@{version}", program.go_package());
    let mut cmd = command(go, env);
    cmd.arg("install").arg(&package).env("GOBIN", gobin.path()).env("CGO_ENABLED", "0");
    let step = BuildStep {
        what: &what,
        how: format!("`go install {package}`"),
        log_name: format!("go-install-{}-{version}", program.binary_name()),
        into: &bin_dir,
    };
    let elapsed = step.run(cmd, env).await?;
    let built = gobin.path().join("server");
    std::fs::rename(&built, &target)
        .map_err(|e| format!("cannot move {} to {}: {e}", built.display(), target.display()))?;
    eprintln!("faultline: built {} in {:.0?}", target.display(), elapsed);
    drop(lock);
    Ok(GoInstalled::Built(target, elapsed))
}

/// The version `go version` reports, e.g. `go1.26.8`.
pub async fn go_version(go: &Path, env: &ProvisionEnv) -> Result<String, String> {
    let mut cmd = command(go, env);
    cmd.arg("env").arg("GOVERSION");
    match run_bounded(cmd, Duration::from_secs(10)).await {
        Ok((true, out)) => Ok(out),
        Ok((false, out)) => Err(last_line(&out).to_string()),
        Err(e) => Err(e),
    }
}
