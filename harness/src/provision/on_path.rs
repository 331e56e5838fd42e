//! The `PATH` source: `livekit-server` / `toxiproxy-server` on `PATH`, if it is the
//! requested version.

use super::order::Search;
use super::version::check_binary;
use super::Source;

/// Looks for the program on [`super::ProvisionEnv::path`] and checks it, recording the
/// attempt.
pub(super) async fn find(search: &mut Search<'_>) -> Option<Source> {
    let (program, env) = (search.program, search.env);
    let Some(bin) = env.find_on_path(program.binary_name()) else {
        search.record("PATH", false, format!("no {} on PATH", program.binary_name()));
        return None;
    };
    match check_binary(program, &bin, search.version, env).await {
        Ok(detail) => search.choose("PATH", detail, Source::PathBinary(bin)),
        Err(reason) => {
            search.record("PATH", false, reason);
            None
        }
    }
}
