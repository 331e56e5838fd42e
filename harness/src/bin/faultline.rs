//! The `faultline` command: `faultline doctor`, `faultline server`, `faultline bench`.
//! Each subcommand lives in its own module under `src/cli/`.

#[path = "../cli/mod.rs"]
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
