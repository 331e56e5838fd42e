//! The `driver` client: a program of the user's that speaks the driver protocol
//! (`docs/driver-protocol.md`) — a Swift, Android-emulator, Go or in-house client joins a
//! scenario without any change to faultline. Its command comes from `FAULTLINE_DRIVER` (or
//! `--sdk driver:COMMAND`, which sets the same [`ProvisionEnv::driver`]) and runs through
//! `sh -c`, in a process group of its own that is killed with everything it started, like the
//! drivers faultline ships. Nothing is provisioned: the program is the user's.

use super::{ClientError, Sdk};
use crate::provision::ProvisionEnv;
use crate::supervise::Launch;

/// The command, or why there is none.
fn command(env: &ProvisionEnv) -> Result<&str, ClientError> {
    env.driver.as_deref().filter(|c| !c.trim().is_empty()).ok_or_else(|| ClientError::Unavailable {
        sdk: Sdk::Driver,
        missing: "no driver command is set".into(),
        fix: "set FAULTLINE_DRIVER to the command that starts your driver (it speaks \
              docs/driver-protocol.md on stdin/stdout), or give it as `--sdk driver:COMMAND`"
            .into(),
    })
}

/// Whether a driver command is set and its program can be found: a sentence naming it, or
/// why it cannot run.
pub fn readiness(env: &ProvisionEnv) -> Result<String, ClientError> {
    let command = command(env)?;
    let program = command.split_whitespace().next().unwrap_or_default();
    let found = if program.contains('/') {
        std::path::Path::new(program).is_file()
    } else {
        env.find_on_path(program).is_some()
    };
    if !found {
        return Err(ClientError::Unavailable {
            sdk: Sdk::Driver,
            missing: format!("the driver's program {program:?} is not a file or on PATH"),
            fix: "check FAULTLINE_DRIVER (or the COMMAND of `--sdk driver:COMMAND`)".into(),
        });
    }
    Ok(format!("runs `{command}`"))
}

/// How to start the driver.
pub(crate) fn prepare(env: &ProvisionEnv) -> Result<Launch, ClientError> {
    readiness(env)?;
    let command = command(env)?;
    let mut launch = Launch::new("sh".into(), vec!["-c".into(), command.into()]);
    launch.group = true;
    Ok(launch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_needs_a_command_whose_program_exists() {
        let mut env = ProvisionEnv::isolated("/nonexistent-cache");
        let unset = readiness(&env).expect_err("no command");
        assert!(unset.to_string().contains("set FAULTLINE_DRIVER"), "{unset}");
        env.driver = Some("/nonexistent/my-driver --flag".into());
        let missing = readiness(&env).expect_err("no such program");
        assert!(
            missing.to_string().contains("\"/nonexistent/my-driver\" is not a file"),
            "{missing}"
        );
        env.driver = Some("/bin/sh -c 'exec my-driver'".into());
        let launch = prepare(&env).expect("a program that exists");
        assert_eq!(launch.program, std::path::PathBuf::from("sh"));
        assert!(launch.group, "killed with everything it starts");
    }
}
