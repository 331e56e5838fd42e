//! Every way getting a server can fail ends in a clear error, quickly: a malformed or
//! unreachable `LIVEKIT_URL`, a taken port, no Go and no Docker, no Docker engine at the
//! address asked (or one that never answers), an engine but no `docker` CLI for the
//! watchdog, a binary of the wrong version, a server that exits or never answers, and — for
//! livekit-server and toxiproxy alike — a port taken at every try. Each test builds its own
//! `ProvisionEnv`, so none touches the process environment.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use faultline::provision::{self, Program, ProvisionEnv, ProvisionError, Source};
use faultline::server::{LiveKitServer, ServerError, ServerOptions};
use faultline::toxiproxy::{Toxiproxy, ToxiproxyError, ToxiproxyOptions};

/// Writes an executable shell script `name` into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> Result<PathBuf> {
    // Written by a child `sh`, never through a file descriptor of this process: tests run
    // in parallel threads, and a child forked by another test while this process held the
    // file open for writing would keep that descriptor until its exec — running the script
    // meanwhile fails with ETXTBSY ("Text file busy").
    let path = dir.join(name);
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("printf '%s\\n' \"$2\" > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(&path)
        .arg(format!("#!/bin/sh\n{body}"))
        .status()?;
    anyhow::ensure!(status.success(), "writing the script {} failed: {status}", path.display());
    Ok(path)
}

/// Writes a fake `program` into `dir` that reports the pinned version when asked and
/// otherwise runs `body`.
fn fake_program(dir: &Path, program: Program, body: &str) -> Result<PathBuf> {
    let (flag, version) = match program {
        Program::LiveKitServer => ("--version", "1.13.5"),
        Program::Toxiproxy => ("-version", "2.12.0"),
    };
    let name = program.binary_name();
    script(
        dir,
        name,
        &format!(
            "if [ \"$1\" = {flag} ]; then echo '{name} version {version}'; exit 0; fi\n{body}"
        ),
    )
}

fn isolated() -> Result<(tempfile::TempDir, ProvisionEnv)> {
    let dir = tempfile::tempdir()?;
    let env = ProvisionEnv::isolated(dir.path().join("cache"));
    Ok((dir, env))
}

fn server_options(env: ProvisionEnv) -> ServerOptions {
    ServerOptions { env, ready_timeout: Duration::from_secs(2), ..ServerOptions::default() }
}

fn toxiproxy_options(env: ProvisionEnv) -> ToxiproxyOptions {
    ToxiproxyOptions { env, ready_timeout: Duration::from_secs(2), ..ToxiproxyOptions::default() }
}

#[test_log::test(tokio::test)]
async fn a_malformed_livekit_url_is_rejected_with_the_expected_form() -> Result<()> {
    for bad in ["not a url", "ftp://127.0.0.1:7880", "ws://", "http://127.0.0.1:99999"] {
        let (_dir, mut env) = isolated()?;
        env.livekit_url = Some(bad.to_string());
        let err = LiveKitServer::start(server_options(env)).await.expect_err(bad);
        assert!(
            matches!(err, ServerError::Provision(ProvisionError::InvalidExternalUrl { .. })),
            "{bad}: {err}"
        );
        let message = err.to_string();
        assert!(message.contains("LIVEKIT_URL"), "{message}");
        assert!(message.contains("expected ws://host:port"), "{message}");
    }
    Ok(())
}

#[test_log::test(tokio::test)]
async fn an_unreachable_livekit_url_fails_within_the_probe_bound() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (_dir, mut env) = isolated()?;
    env.livekit_url = Some(format!("ws://127.0.0.1:{port}"));
    env.external_probe_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = provision::provision(Program::LiveKitServer, "v1.13.5", &env)
        .await
        .expect_err("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(matches!(err, ProvisionError::ExternalUnreachable { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("does not answer"), "{message}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_reachable_livekit_url_is_used_as_an_external_server() -> Result<()> {
    let real = LiveKitServer::shared().await?;
    let (_dir, mut env) = isolated()?;
    env.livekit_url = Some(real.ws_url());
    env.livekit_api_key = real.api_key().to_string();
    env.livekit_api_secret = real.api_secret().to_string();
    let external = LiveKitServer::start(server_options(env)).await?;
    assert!(matches!(external.source(), Source::External { .. }), "{}", external.source());
    assert_eq!(external.ws_url(), real.ws_url());
    assert_eq!(external.signal_addr(), real.signal_addr());
    assert!(external.log_path().is_none());
    external.room_service().list_rooms().await?;
    let err = external.kill().await.expect_err("cannot kill an external server");
    assert!(matches!(err, ServerError::External { operation: "kill", .. }), "{err}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_taken_port_is_named_in_the_error() -> Result<()> {
    let holder = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = holder.local_addr()?.port();
    let opts = ServerOptions { http_port: Some(port), ..ServerOptions::default() };
    let err = LiveKitServer::start(opts).await.expect_err("the port is held");
    assert!(matches!(err, ServerError::PortInUse { port: p, .. } if p == port), "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn without_go_or_docker_every_source_is_listed_with_the_fix() -> Result<()> {
    for (program, env_var) in [
        (Program::LiveKitServer, "LIVEKIT_SERVER_BIN"),
        (Program::Toxiproxy, "TOXIPROXY_SERVER_BIN"),
    ] {
        let (_dir, env) = isolated()?;
        let started = Instant::now();
        let err = provision::provision(program, "v1.13.5", &env).await.expect_err("nothing");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        let ProvisionError::NoSource { attempts, .. } = &err else {
            panic!("expected NoSource, got {err}");
        };
        let sources: Vec<&str> = attempts.iter().map(|a| a.source).collect();
        let mut expected = vec![env_var, "PATH", "cache", "go install", "docker"];
        if program == Program::LiveKitServer {
            expected.insert(0, "LIVEKIT_URL");
        }
        assert_eq!(sources, expected);
        assert!(attempts.iter().all(|a| !a.chosen));
        let message = err.to_string();
        for needle in [
            "go not found on PATH; install Go >= 1.26",
            "no Docker engine to ask",
            "fix: install Go >= 1.26",
            env_var,
        ] {
            assert!(message.contains(needle), "{needle:?} missing from:\n{message}");
        }
    }
    Ok(())
}

/// An isolated environment whose `PATH` holds a `docker` CLI (a script that fails: the
/// engine is asked directly, the CLI only removes containers) and whose Docker engine is
/// asked at a socket in the temp dir, which the test may serve or leave absent.
fn with_docker_cli() -> Result<(tempfile::TempDir, ProvisionEnv, PathBuf)> {
    let (dir, mut env) = isolated()?;
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin)?;
    let docker = script(&bin, "docker", "exit 1")?;
    env.path = Some(bin.into_os_string());
    env.docker_host = Some(format!("unix://{}", dir.path().join("docker.sock").display()));
    Ok((dir, env, docker))
}

/// Imitates a Docker engine on the unix socket `path`: every request is answered `200 OK`
/// with `{"Version": version}` (so the engine is that version, and has every image).
fn fake_engine(path: &Path, version: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::UnixListener::bind(path)?;
    let body = format!("{{\"Version\":\"{version}\"}}");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(())
}

#[test_log::test(tokio::test)]
async fn without_a_docker_engine_the_container_source_is_skipped_quickly() -> Result<()> {
    let (dir, mut env, _docker) = with_docker_cli()?;
    let socket = dir.path().join("docker.sock");
    let err = provision::provision(Program::Toxiproxy, "v2.12.0", &env).await.expect_err("none");
    let message = err.to_string();
    let needle = format!("no Docker engine answered at unix://{}", socket.display());
    assert!(message.contains(&needle), "{needle:?} missing from:\n{message}");
    assert!(message.contains("start the Docker engine, or set DOCKER_HOST"), "{message}");

    // An engine that takes the connection and never answers is cut off by the probe bound.
    let _silent = std::os::unix::net::UnixListener::bind(&socket)?;
    env.docker_probe_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = provision::provision(Program::Toxiproxy, "v2.12.0", &env).await.expect_err("none");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let message = err.to_string();
    assert!(message.contains(&format!("{needle}: no answer within 1s")), "{message}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn an_engine_without_a_docker_cli_is_skipped_naming_the_watchdog() -> Result<()> {
    let (dir, mut env, _docker) = with_docker_cli()?;
    fake_engine(&dir.path().join("docker.sock"), "27.3.1")?;
    env.path = None;
    let err = provision::provision(Program::Toxiproxy, "v2.12.0", &env).await.expect_err("none");
    let message = err.to_string();
    assert!(
        message.contains("engine 27.3.1 answers, but no docker CLI is on PATH: the watchdog"),
        "{message}"
    );
    Ok(())
}

#[test_log::test(tokio::test)]
async fn an_engine_and_a_docker_cli_provide_the_upstream_image() -> Result<()> {
    let (dir, env, docker) = with_docker_cli()?;
    fake_engine(&dir.path().join("docker.sock"), "27.3.1")?;
    let survey = provision::survey(Program::Toxiproxy, "v2.12.0", &env).await;
    let container = survey.last().context("the docker attempt")?;
    assert_eq!(container.source, "docker");
    assert!(container.chosen, "{container}");
    assert_eq!(container.detail, "engine 27.3.1 can run ghcr.io/shopify/toxiproxy:2.12.0");

    let provisioned = provision::provision(Program::Toxiproxy, "v2.12.0", &env).await?;
    let image = "ghcr.io/shopify/toxiproxy:2.12.0".to_string();
    assert_eq!(provisioned.source, Source::Container { image, docker });
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_binary_of_another_version_is_skipped_and_the_cache_is_used() -> Result<()> {
    let (dir, mut env) = isolated()?;
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin)?;
    let old = script(&bin, "livekit-server", "echo 'livekit-server version 1.0.0'")?;
    env.path = Some(bin.into_os_string());
    env.livekit_server_bin = Some(old);
    let cached = env.cached_binary(Program::LiveKitServer, "v1.13.5");
    std::fs::create_dir_all(cached.parent().context("cache/bin")?)?;
    script(cached.parent().context("cache/bin")?, "livekit-server-v1.13.5", "exit 0")?;

    let provisioned = provision::provision(Program::LiveKitServer, "1.13.5", &env).await?;
    assert_eq!(provisioned.source, Source::Cache(cached));
    assert_eq!(provisioned.version, "v1.13.5");
    let skipped: Vec<&str> = provisioned
        .attempts
        .iter()
        .filter(|a| a.detail.contains("is v1.0.0 (--version), not the requested v1.13.5"))
        .map(|a| a.source)
        .collect();
    assert_eq!(skipped, ["LIVEKIT_SERVER_BIN", "PATH"]);
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_version_that_is_not_a_version_is_rejected() -> Result<()> {
    let (_dir, env) = isolated()?;
    let err = provision::provision(Program::LiveKitServer, "latest", &env).await.expect_err("bad");
    assert!(matches!(err, ProvisionError::InvalidVersion(ref v) if v == "latest"), "{err}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_server_that_exits_at_startup_is_reported_with_its_log() -> Result<()> {
    let (dir, mut env) = isolated()?;
    // livekit-server exits with status 0 on configuration errors: imitate that.
    let fake = fake_program(
        dir.path(),
        Program::LiveKitServer,
        "echo 'could not parse config: imitation failure'; exit 0",
    )?;
    env.livekit_server_bin = Some(fake);
    let err = LiveKitServer::start(server_options(env)).await.expect_err("it exits");
    assert!(matches!(err, ServerError::Died(_)), "{err}");
    let message = err.to_string();
    assert!(message.contains("could not parse config: imitation failure"), "{message}");
    assert!(message.contains("exited unexpectedly (exit status: 0)"), "{message}");
    assert!(message.contains("faultline-logs/provisioning_errors/"), "{message}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_server_that_never_answers_is_killed_after_the_ready_bound() -> Result<()> {
    let (dir, mut env) = isolated()?;
    let fake = fake_program(
        dir.path(),
        Program::LiveKitServer,
        "echo 'pretending to start'; exec /bin/sleep 60",
    )?;
    env.livekit_server_bin = Some(fake);
    let started = Instant::now();
    let err = LiveKitServer::start(server_options(env)).await.expect_err("never ready");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(matches!(err, ServerError::NotReady { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("within 2s"), "{message}");
    assert!(message.contains("pretending to start"), "{message}");
    assert!(message.contains("faultline-logs/provisioning_errors/"), "{message}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_port_taken_at_every_try_is_tried_three_times_then_reported_with_the_log() -> Result<()> {
    for program in [Program::LiveKitServer, Program::Toxiproxy] {
        let (dir, mut env) = isolated()?;
        let tries = dir.path().join("tries");
        let fake = fake_program(
            dir.path(),
            program,
            &format!(
                "echo try >> '{}'\n\
                 echo 'listen tcp 127.0.0.1:7: bind: address already in use'; exit 1",
                tries.display()
            ),
        )?;
        let err = match program {
            Program::LiveKitServer => {
                env.livekit_server_bin = Some(fake);
                let err = LiveKitServer::start(server_options(env)).await.expect_err("taken");
                assert!(matches!(err, ServerError::Died(_)), "{err}");
                err.to_string()
            }
            Program::Toxiproxy => {
                env.toxiproxy_server_bin = Some(fake);
                let err = Toxiproxy::start(toxiproxy_options(env)).await.expect_err("taken");
                assert!(matches!(err, ToxiproxyError::Died(_)), "{err}");
                err.to_string()
            }
        };
        assert_eq!(std::fs::read_to_string(&tries)?.lines().count(), 3, "{program}: {err}");
        assert!(err.contains("address already in use"), "{err}");
        assert!(err.contains("faultline-logs/provisioning_errors/"), "{err}");
    }
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_toxiproxy_that_never_answers_is_killed_after_the_ready_bound() -> Result<()> {
    let (dir, mut env) = isolated()?;
    let fake = fake_program(
        dir.path(),
        Program::Toxiproxy,
        "echo 'pretending to start'; exec /bin/sleep 60",
    )?;
    env.toxiproxy_server_bin = Some(fake);
    let err = Toxiproxy::start(toxiproxy_options(env)).await.expect_err("never ready");
    assert!(matches!(err, ToxiproxyError::NotReady(_)), "{err}");
    let message = err.to_string();
    assert!(message.contains("/version within 2s"), "{message}");
    assert!(message.contains("pretending to start"), "{message}");
    assert!(message.contains("faultline-logs/provisioning_errors/"), "{message}");
    Ok(())
}

/// An isolated environment whose PATH holds only a fake `go` running `install_body` for
/// `go install` (it may use $GOBIN, like the real one).
fn with_fake_go(install_body: &str) -> Result<(tempfile::TempDir, ProvisionEnv)> {
    let (dir, mut env) = isolated()?;
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin)?;
    script(&bin, "go", &format!("if [ \"$1\" = install ]; then\n{install_body}\nfi\nexit 1"))?;
    env.path = Some(bin.into_os_string());
    Ok((dir, env))
}

#[test_log::test(tokio::test)]
async fn go_install_builds_once_into_the_cache_under_a_lock() -> Result<()> {
    let counter = tempfile::NamedTempFile::new()?;
    let (_dir, env) = with_fake_go(&format!(
        "echo \"fake go: install $2 with CGO_ENABLED=$CGO_ENABLED\"\n\
         echo build >> {counter}\n\
         /bin/sleep 1\n\
         printf '#!/bin/sh\\necho toxiproxy-server version git\\n' > \"$GOBIN/server\"\n\
         /bin/chmod +x \"$GOBIN/server\"\nexit 0",
        counter = counter.path().display()
    ))?;
    let (a, b) = tokio::join!(
        provision::provision(Program::Toxiproxy, "v2.12.0", &env),
        provision::provision(Program::Toxiproxy, "v2.12.0", &env)
    );
    let cached = env.cached_binary(Program::Toxiproxy, "v2.12.0");
    let mut sources = [a?.source, b?.source];
    sources.sort_by_key(|s| matches!(s, Source::Cache(_)));
    assert_eq!(sources, [Source::GoInstall(cached.clone()), Source::Cache(cached.clone())]);
    assert_eq!(std::fs::read_to_string(counter.path())?.lines().count(), 1, "built twice");
    let log = env.cache_dir.join("logs/go-install-toxiproxy-server-v2.12.0.log");
    let log = std::fs::read_to_string(&log).with_context(|| log.display().to_string())?;
    assert!(
        log.contains(
            "fake go: install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0 with CGO_ENABLED=0"
        ),
        "{log}"
    );
    // The next provisioning finds the cache without building.
    let again = provision::provision(Program::Toxiproxy, "v2.12.0", &env).await?;
    assert_eq!(again.source, Source::Cache(cached));
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_failing_go_install_is_reported_with_its_output_and_log() -> Result<()> {
    let (_dir, env) =
        with_fake_go("echo 'go: reading https://proxy.golang.org/...: 403 Forbidden' >&2\nexit 1")?;
    let err = provision::provision(Program::Toxiproxy, "v2.12.0", &env).await.expect_err("fails");
    let message = err.to_string();
    assert!(message.contains("failed (exit status: 1)"), "{message}");
    assert!(message.contains("403 Forbidden"), "{message}");
    assert!(message.contains("logs/go-install-toxiproxy-server-v2.12.0.log"), "{message}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_go_install_that_hangs_is_cut_off_by_the_build_bound() -> Result<()> {
    let (_dir, mut env) = with_fake_go("exec /bin/sleep 60")?;
    env.build_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = provision::provision(Program::Toxiproxy, "v2.12.0", &env).await.expect_err("hangs");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(err.to_string().contains("did not finish within 1s"), "{err}");
    Ok(())
}
