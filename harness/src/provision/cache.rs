//! The cache source: a build made earlier into `<cache>/bin/<program>-<version>`.

use super::command::is_executable;
use super::order::{record, Mode};
use super::{Attempt, Program, ProvisionEnv, Source};

/// Looks for the cached build, recording the attempt.
pub(super) fn find(
    program: Program,
    version: &str,
    env: &ProvisionEnv,
    mode: Mode,
    attempts: &mut Vec<Attempt>,
) -> Option<Source> {
    let cached = env.cached_binary(program, version);
    if is_executable(&cached) {
        record(attempts, "cache", true, format!("{}", cached.display()));
        (mode == Mode::Provision).then_some(Source::Cache(cached))
    } else {
        record(attempts, "cache", false, format!("no {}", cached.display()));
        None
    }
}
