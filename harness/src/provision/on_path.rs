//! The `PATH` source: `livekit-server` / `toxiproxy-server` on `PATH`, if it is the
//! requested version.

use super::order::{record, Mode};
use super::version::check_binary;
use super::{Attempt, Program, ProvisionEnv, Source};

/// Looks for the program on [`ProvisionEnv::path`] and checks it, recording the attempt.
pub(super) async fn find(
    program: Program,
    version: &str,
    env: &ProvisionEnv,
    mode: Mode,
    attempts: &mut Vec<Attempt>,
) -> Option<Source> {
    let Some(bin) = env.find_on_path(program.binary_name()) else {
        record(attempts, "PATH", false, format!("no {} on PATH", program.binary_name()));
        return None;
    };
    match check_binary(program, &bin, version, env).await {
        Ok(detail) => {
            record(attempts, "PATH", true, detail);
            (mode == Mode::Provision).then_some(Source::PathBinary(bin))
        }
        Err(reason) => {
            record(attempts, "PATH", false, reason);
            None
        }
    }
}
