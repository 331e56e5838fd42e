//! The container source: the upstream image, run by a Docker engine.

use std::path::Path;

use super::command::{command, last_line, run_bounded};
use super::order::{record, Mode};
use super::{Attempt, Program, ProvisionEnv, Source};

/// Uses the upstream image when a Docker engine answers (pulling the image if needed; in
/// a survey, only asks the engine), recording the attempt.
pub(super) async fn find(
    program: Program,
    version: &str,
    env: &ProvisionEnv,
    mode: Mode,
    attempts: &mut Vec<Attempt>,
) -> Option<Source> {
    let Some(docker) = env.find_on_path("docker") else {
        record(attempts, "docker", false, "docker CLI not found on PATH".into());
        return None;
    };
    if mode == Mode::Survey {
        match docker_engine(&docker, env).await {
            Ok(engine) => record(
                attempts,
                "docker",
                true,
                format!("engine {engine} can run {}", program.image(version)),
            ),
            Err(reason) => record(attempts, "docker", false, reason),
        }
        return None;
    }
    match docker_image(program, version, env, &docker).await {
        Ok(image) => {
            record(attempts, "docker", true, format!("image {image}"));
            Some(Source::Container { image, docker })
        }
        Err(reason) => {
            record(attempts, "docker", false, reason);
            None
        }
    }
}

/// Checks that a Docker engine answers and the image is present (pulling it if needed).
async fn docker_image(
    program: Program,
    version: &str,
    env: &ProvisionEnv,
    docker: &Path,
) -> Result<String, String> {
    docker_engine(docker, env).await?;
    let image = program.image(version);
    let mut inspect = command(docker, env);
    inspect.args(["image", "inspect", "--format", "{{.Id}}", &image]);
    if let Ok((true, _)) = run_bounded(inspect, env.docker_probe_timeout).await {
        return Ok(image);
    }
    eprintln!("faultline: pulling {image}");
    let mut pull = command(docker, env);
    pull.args(["pull", &image]);
    match run_bounded(pull, env.build_timeout).await {
        Ok((true, _)) => Ok(image),
        Ok((false, out)) => Err(format!("docker pull {image} failed: {}", last_line(&out))),
        Err(e) => Err(format!("docker pull {image}: {e}")),
    }
}

/// Checks that a Docker engine answers `docker info` within the probe bound; Ok carries
/// the engine version.
pub async fn docker_engine(docker: &Path, env: &ProvisionEnv) -> Result<String, String> {
    let mut info = command(docker, env);
    info.args(["info", "--format", "{{.ServerVersion}}"]);
    match run_bounded(info, env.docker_probe_timeout).await {
        Ok((true, out)) if !out.is_empty() => Ok(out),
        Ok((_, out)) => Err(format!("no Docker engine answers: {}", last_line(&out))),
        Err(e) => Err(format!("no Docker engine answers: docker info {e}")),
    }
}
