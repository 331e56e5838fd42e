//! The order the sources are tried in, and the record of each one considered.

use super::{
    cache, container, explicit, external, go_install, on_path, version, Attempt, Program,
    ProvisionEnv, ProvisionError, Provisioned, Source,
};

/// Provisions `program` at `version`, trying every source in order.
pub async fn provision(
    program: Program,
    version: &str,
    env: &ProvisionEnv,
) -> Result<Provisioned, ProvisionError> {
    let version = version::canonical_version(version)?;
    let mut attempts = Vec::new();
    let found = find_source(program, &version, env, Mode::Provision, &mut attempts).await?;
    match found {
        Some(source) => {
            tracing::info!(%program, %version, %source, "provisioned");
            Ok(Provisioned { program, version, source, attempts })
        }
        None => Err(ProvisionError::NoSource { program, version, attempts }),
    }
}

/// Checks every source without building or pulling anything: each attempt is `chosen`
/// when that source would work (for `go install`: Go is present). For `faultline doctor`.
pub async fn survey(program: Program, version: &str, env: &ProvisionEnv) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let version = match version::canonical_version(version) {
        Ok(version) => version,
        Err(e) => {
            record(&mut attempts, "version", false, e.to_string());
            return attempts;
        }
    };
    if let Err(e) = find_source(program, &version, env, Mode::Survey, &mut attempts).await {
        record(&mut attempts, "LIVEKIT_URL", false, e.to_string());
    }
    attempts
}

/// Whether a source is to be used, or only checked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Stop at the first source that works, building or pulling if needed.
    Provision,
    /// Check every source, build and pull nothing.
    Survey,
}

/// Notes one source considered (and logs it).
pub(super) fn record(
    attempts: &mut Vec<Attempt>,
    source: &'static str,
    chosen: bool,
    detail: String,
) {
    if chosen {
        tracing::info!(source, %detail, "provisioning source chosen");
    } else {
        tracing::info!(source, %detail, "provisioning source skipped");
    }
    attempts.push(Attempt { source, chosen, detail });
}

/// Tries each source in turn, recording every one; in a survey, all of them. Each source
/// returns the [`Source`] to use only when `mode` is [`Mode::Provision`] and it works.
async fn find_source(
    program: Program,
    version: &str,
    env: &ProvisionEnv,
    mode: Mode,
    attempts: &mut Vec<Attempt>,
) -> Result<Option<Source>, ProvisionError> {
    if program == Program::LiveKitServer {
        if let Some(source) = external::find(env, mode, attempts).await? {
            return Ok(Some(source));
        }
    }
    if let Some(source) = explicit::find(program, version, env, mode, attempts).await {
        return Ok(Some(source));
    }
    if let Some(source) = on_path::find(program, version, env, mode, attempts).await {
        return Ok(Some(source));
    }
    if let Some(source) = cache::find(program, version, env, mode, attempts) {
        return Ok(Some(source));
    }
    if let Some(source) = go_install::find(program, version, env, mode, attempts).await {
        return Ok(Some(source));
    }
    Ok(container::find(program, version, env, mode, attempts).await)
}
