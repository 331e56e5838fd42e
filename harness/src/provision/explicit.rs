//! The explicit-binary source: `LIVEKIT_SERVER_BIN` / `TOXIPROXY_SERVER_BIN`, if it names
//! the requested version.

use super::order::{record, Mode};
use super::version::check_binary;
use super::{Attempt, Program, ProvisionEnv, Source};

/// Checks the binary the program's environment variable names, recording the attempt.
pub(super) async fn find(
    program: Program,
    version: &str,
    env: &ProvisionEnv,
    mode: Mode,
    attempts: &mut Vec<Attempt>,
) -> Option<Source> {
    let env_var = program.bin_env_var();
    let Some(bin) = env.explicit_binary(program) else {
        record(attempts, env_var, false, "not set".into());
        return None;
    };
    match check_binary(program, bin, version, env).await {
        Ok(detail) => {
            record(attempts, env_var, true, detail);
            (mode == Mode::Provision).then(|| Source::EnvBinary(bin.to_path_buf()))
        }
        Err(reason) => {
            record(attempts, env_var, false, reason);
            None
        }
    }
}
