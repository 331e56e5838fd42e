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
    let mut search =
        Search { program, version: &version, env, mode: Mode::Provision, attempts: Vec::new() };
    let found = find_source(&mut search).await?;
    let attempts = search.attempts;
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
    let mut search = Search { program, version, env, mode: Mode::Survey, attempts: Vec::new() };
    let version = match version::canonical_version(version) {
        Ok(version) => version,
        Err(e) => {
            search.record("version", false, e.to_string());
            return search.attempts;
        }
    };
    search.version = &version;
    if let Err(e) = find_source(&mut search).await {
        search.record("LIVEKIT_URL", false, e.to_string());
    }
    search.attempts
}

/// Whether a source is to be used, or only checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Stop at the first source that works, building or pulling if needed.
    Provision,
    /// Check every source, build and pull nothing.
    Survey,
}

/// One search for a program: what is wanted, the environment, whether sources are to be
/// used or only checked, and every source considered so far. Each source takes it and
/// gives back the [`Source`] to use, if it works and this is no survey.
pub(super) struct Search<'a> {
    /// The program wanted.
    pub(super) program: Program,
    /// Its canonical version.
    pub(super) version: &'a str,
    /// Where the inputs come from.
    pub(super) env: &'a ProvisionEnv,
    mode: Mode,
    attempts: Vec<Attempt>,
}

impl Search<'_> {
    /// Whether sources are only checked: nothing is built or pulled.
    pub(super) fn surveying(&self) -> bool {
        self.mode == Mode::Survey
    }

    /// Notes one source considered (and logs it).
    pub(super) fn record(&mut self, source: &'static str, chosen: bool, detail: String) {
        if chosen {
            tracing::info!(source, %detail, "provisioning source chosen");
        } else {
            tracing::info!(source, %detail, "provisioning source skipped");
        }
        self.attempts.push(Attempt { source, chosen, detail });
    }

    /// Notes `name` as working and returns `found` to use, unless this is a survey.
    pub(super) fn choose(
        &mut self,
        name: &'static str,
        detail: String,
        found: Source,
    ) -> Option<Source> {
        self.record(name, true, detail);
        (!self.surveying()).then_some(found)
    }
}

/// Tries each source in turn, recording every one; in a survey, all of them.
async fn find_source(search: &mut Search<'_>) -> Result<Option<Source>, ProvisionError> {
    if search.program == Program::LiveKitServer {
        if let Some(source) = external::find(search).await? {
            return Ok(Some(source));
        }
    }
    if let Some(source) = explicit::find(search).await {
        return Ok(Some(source));
    }
    if let Some(source) = on_path::find(search).await {
        return Ok(Some(source));
    }
    if let Some(source) = cache::find(search) {
        return Ok(Some(source));
    }
    if let Some(source) = go_install::find(search).await {
        return Ok(Some(source));
    }
    Ok(container::find(search).await)
}
