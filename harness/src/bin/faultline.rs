//! The `faultline` command: `doctor`, `server`, `bench`, `run`, and the simulation lane's
//! `explore` and `replay`.
//! Each subcommand lives in its own module under `src/cli/`.

#[path = "../cli/mod.rs"]
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
