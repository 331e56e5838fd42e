//! The container source: the upstream image, run through testcontainers by the Docker
//! engine at [`ProvisionEnv::docker_host`].
//!
//! The engine is asked first, bounded by [`ProvisionEnv::docker_probe_timeout`], so that a
//! machine without one moves on at once, with the address asked and the fix. The `docker`
//! CLI is needed too, though testcontainers talks to the engine itself: testcontainers has
//! no reaper that outlives a SIGKILLed test process, so the watchdog of
//! [`crate::supervise`] removes the container with `docker rm -f` then.

use std::path::PathBuf;

use testcontainers::bollard::{Docker, API_DEFAULT_VERSION};
use testcontainers::runners::AsyncRunner;
use testcontainers::GenericImage;

use super::order::Search;
use super::{ProvisionEnv, Source};

/// Uses the upstream image when a Docker engine answers and the `docker` CLI is there
/// (pulling the image if needed; in a survey, only asks the engine), recording the attempt.
pub(super) async fn find(search: &mut Search<'_>) -> Option<Source> {
    let (image, env) = (search.program.image(search.version), search.env);
    let (engine, docker) = match docker_runs_containers(env).await {
        Ok(found) => found,
        Err(reason) => {
            search.record("docker", false, reason);
            return None;
        }
    };
    if search.surveying() {
        search.record("docker", true, format!("engine {engine} can run {image}"));
        return None;
    }
    match pull_if_missing(&image, env).await {
        Ok(()) => {
            let detail = format!("image {image} on engine {engine}");
            search.choose("docker", detail, Source::Container { image, docker })
        }
        Err(reason) => {
            search.record("docker", false, reason);
            None
        }
    }
}

/// Checks what running a container takes: an engine that answers ([`docker_engine`]) and a
/// `docker` CLI on `PATH` for the watchdog. Ok carries the engine's version and the CLI.
pub(crate) async fn docker_runs_containers(
    env: &ProvisionEnv,
) -> Result<(String, PathBuf), String> {
    let engine = docker_engine(env).await?;
    match env.find_on_path("docker") {
        Some(docker) => Ok((engine, docker)),
        None => Err(format!(
            "engine {engine} answers, but no docker CLI is on PATH: the watchdog that removes \
             a container after the test process dies needs it; install the docker CLI"
        )),
    }
}

/// Asks the Docker engine at [`ProvisionEnv::docker_host`] for its version, within
/// [`ProvisionEnv::docker_probe_timeout`]. Err names the address and the fix.
pub async fn docker_engine(env: &ProvisionEnv) -> Result<String, String> {
    let Some(host) = env.docker_host.as_deref() else {
        return Err("no Docker engine to ask: this environment names none (DOCKER_HOST)".into());
    };
    let no_engine = |reason: String| {
        format!(
            "no Docker engine answered at {host}: {reason}; start the Docker engine, or set \
             DOCKER_HOST to the address of one that runs"
        )
    };
    let client = connect(host).map_err(no_engine)?;
    match tokio::time::timeout(env.docker_probe_timeout, client.version()).await {
        Err(_) => Err(no_engine(format!("no answer within {:?}", env.docker_probe_timeout))),
        Ok(Err(e)) => Err(no_engine(e.to_string())),
        Ok(Ok(version)) => Ok(version.version.unwrap_or_else(|| "(version unknown)".into())),
    }
}

/// A client for the engine at `host` (`unix://…`, `tcp://…`, `http://…`). Connecting is
/// lazy: nothing is sent until the first request.
fn connect(host: &str) -> Result<Docker, String> {
    // The request bound is ours (the callers' timeouts); this one only has to be longer.
    const CLIENT_TIMEOUT_SECS: u64 = 24 * 60 * 60;
    let client = match host.split_once("://").map(|(scheme, _)| scheme) {
        Some("unix") => Docker::connect_with_unix(host, CLIENT_TIMEOUT_SECS, API_DEFAULT_VERSION),
        Some("tcp" | "http") => {
            Docker::connect_with_http(host, CLIENT_TIMEOUT_SECS, API_DEFAULT_VERSION)
        }
        _ => return Err("only unix://, tcp:// and http:// addresses are supported".into()),
    };
    client.map_err(|e| e.to_string())
}

/// Pulls `image` unless the engine has it, bounded by [`ProvisionEnv::build_timeout`].
async fn pull_if_missing(image: &str, env: &ProvisionEnv) -> Result<(), String> {
    let host = env.docker_host.as_deref().unwrap_or_default();
    let client = connect(host)?;
    if let Ok(Ok(_)) =
        tokio::time::timeout(env.docker_probe_timeout, client.inspect_image(image)).await
    {
        return Ok(());
    }
    eprintln!("faultline: pulling {image}");
    let (name, tag) = split_image(image);
    match tokio::time::timeout(env.build_timeout, GenericImage::new(name, tag).pull_image()).await {
        Err(_) => Err(format!("pulling {image} did not finish within {:?}", env.build_timeout)),
        Ok(Err(e)) => Err(format!("pulling {image} failed: {e}")),
        Ok(Ok(_)) => Ok(()),
    }
}

/// `repository:tag` split at the tag's colon (a registry's port has a `/` after it).
pub(crate) fn split_image(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::split_image;

    #[test]
    fn an_image_reference_splits_at_its_tag() {
        assert_eq!(
            split_image("ghcr.io/shopify/toxiproxy:2.12.0"),
            ("ghcr.io/shopify/toxiproxy", "2.12.0")
        );
        assert_eq!(split_image("redis:7.0"), ("redis", "7.0"));
        // A registry's port is not a tag.
        assert_eq!(split_image("localhost:5000/livekit"), ("localhost:5000/livekit", "latest"));
        assert_eq!(split_image(""), ("", "latest"));
    }
}
