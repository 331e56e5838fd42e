//! The explicit-binary source: `LIVEKIT_SERVER_BIN` / `TOXIPROXY_SERVER_BIN`, if it names
//! the requested version.

use super::order::Search;
use super::version::check_binary;
use super::Source;

/// Checks the binary the program's environment variable names, recording the attempt.
pub(super) async fn find(search: &mut Search<'_>) -> Option<Source> {
    let (program, env) = (search.program, search.env);
    let env_var = program.bin_env_var();
    let Some(bin) = env.explicit_binary(program) else {
        search.record(env_var, false, "not set".into());
        return None;
    };
    match check_binary(program, bin, search.version, env).await {
        Ok(detail) => search.choose(env_var, detail, Source::EnvBinary(bin.to_path_buf())),
        Err(reason) => {
            search.record(env_var, false, reason);
            None
        }
    }
}
