//! The `go` client: the LiveKit Go SDK (`server-sdk-go` v2, on pion), what bots, recorders
//! and load testers join rooms with, driven by `harness/drivers/go` (a small Go program
//! speaking the driver protocol).
//!
//! Provisioned on first use like livekit-server: the driver's sources and its `go.mod` /
//! `go.sum` (the pins) are written to `<cache>/drivers/go-<pin>` and built there with
//! `go build`, once, under the cache lock; a changed source builds it again. Its synthetic
//! camera sends faultline-sdk's own VP8 frames, given on its command line, so every SDK that
//! faultline publishes from in-process or in Go sends the same picture.
//!
//! Another published version runs when `FAULTLINE_GO_VERSION` names it: the same driver,
//! its `go.mod` requiring that version, built in `<cache>/drivers/go-<version>` after
//! `go mod tidy` resolves what that version needs.

use std::path::PathBuf;

use super::stage::{self, Step};
use super::{ClientError, Sdk};
use crate::provision::ProvisionEnv;
use crate::supervise::Launch;

/// The pinned `server-sdk-go` (the newest v2 that builds from the Go module proxy: v2.20.0
/// needs a fork of pion/webrtc the proxy refuses; see `go.mod`).
pub const GO_SDK_VERSION: &str = "2.19.0";

const GO_MOD: &str = include_str!("../../drivers/go/go.mod");
const GO_SUM: &str = include_str!("../../drivers/go/go.sum");
const MAIN_GO: &str = include_str!("../../drivers/go/main.go");
const MEDIA_GO: &str = include_str!("../../drivers/go/media.go");

/// The module the driver builds against.
const MODULE: &str = "github.com/livekit/server-sdk-go/v2";

/// The synthetic camera's size, as faultline-sdk's and the driver's (`media.go`) are.
const VIDEO_SIZE: (u16, u16) = (320, 180);

/// The built driver's file name in its directory.
const BINARY: &str = "faultline-go-driver";

/// The version to build: `FAULTLINE_GO_VERSION`'s, checked, or the pin.
fn version(env: &ProvisionEnv) -> Result<&str, ClientError> {
    match env.go_version.as_deref() {
        Some(version) => {
            let newest = "go list -m -versions github.com/livekit/server-sdk-go/v2";
            stage::exact_version(Sdk::Go, "FAULTLINE_GO_VERSION", version, newest)?;
            Ok(version)
        }
        None => Ok(GO_SDK_VERSION),
    }
}

/// The driver's directory in the cache (one per version).
fn dir(env: &ProvisionEnv, version: &str) -> PathBuf {
    stage::dir(env, &format!("go-{version}"))
}

/// The files the driver builds from. For another version, `go.mod` requires only that
/// version, and `go mod tidy` resolves the rest as that version's own `go.mod` asks (not at
/// the pin's versions).
fn files(version: &str) -> Vec<(&'static str, String)> {
    let mut files = vec![("main.go", MAIN_GO.to_owned()), ("media.go", MEDIA_GO.to_owned())];
    if version == GO_SDK_VERSION {
        files.push(("go.mod", GO_MOD.to_owned()));
        files.push(("go.sum", GO_SUM.to_owned()));
    } else {
        let module = GO_MOD.lines().find(|l| l.starts_with("module ")).unwrap_or("module driver");
        let go = GO_MOD.lines().find(|l| l.starts_with("go ")).unwrap_or("go 1.26");
        let go_mod = format!(
            "// FAULTLINE_GO_VERSION: the driver against server-sdk-go v{version}, its \
             dependencies as `go mod tidy` resolves them.\n{module}\n\n{go}\n\nrequire \
             {MODULE} v{version}\n"
        );
        files.push(("go.mod", go_mod));
    }
    files
}

/// What the build was done for: every file it builds from (a changed source builds again).
fn pins(files: &[(&str, String)]) -> String {
    files.iter().map(|(name, text)| format!("== {name}\n{text}")).collect()
}

/// The Go toolchain, or why there is none.
fn go(env: &ProvisionEnv) -> Result<PathBuf, ClientError> {
    env.find_on_path("go").ok_or_else(|| ClientError::Unavailable {
        sdk: Sdk::Go,
        missing: "go is not on PATH (the Go SDK's driver is built with it)".into(),
        fix: "install Go >= 1.26 (https://go.dev/dl/), the toolchain livekit-server is built \
              with too"
            .into(),
    })
}

/// Whether the client can run here, without preparing anything.
pub fn readiness(env: &ProvisionEnv) -> Result<String, ClientError> {
    let go = go(env)?;
    let version = version(env)?;
    let dir = dir(env, version);
    Ok(if stage::is_ready(&dir, &pins(&files(version))) {
        format!("server-sdk-go v{version} built in {}", dir.display())
    } else {
        format!(
            "first use builds server-sdk-go v{version}'s driver with {} into {}",
            go.display(),
            dir.display()
        )
    })
}

/// The built driver (there once the client is prepared): what a developer compares a build
/// of their own with.
pub(crate) fn pinned_build(env: &ProvisionEnv) -> PathBuf {
    dir(env, GO_SDK_VERSION).join(BINARY)
}

/// Builds the driver if needed and returns how to start it.
pub(crate) async fn prepare(env: &ProvisionEnv) -> Result<Launch, ClientError> {
    let go = go(env)?;
    let version = version(env)?;
    let dir = dir(env, version);
    let files = files(version);
    let build = Step {
        program: go.clone(),
        args: vec!["build".into(), "-trimpath".into(), "-o".into(), BINARY.into(), ".".into()],
        log_name: format!("go-build-driver-{version}"),
        // The pinned build's pins are go.sum's: nothing may move them.
        env: vec![("CGO_ENABLED", "0"), ("GOFLAGS", "-mod=readonly")],
    };
    let steps = if version == GO_SDK_VERSION {
        vec![build]
    } else {
        let tidy = Step {
            program: go,
            args: vec!["mod".into(), "tidy".into()],
            log_name: format!("go-mod-tidy-driver-{version}"),
            env: Vec::new(),
        };
        vec![tidy, build]
    };
    let named: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    stage::ensure(Sdk::Go, env, &dir, &named, &pins(&files), &steps).await?;
    let (key, delta) = faultline_sdk::media::synthetic_vp8_frames(VIDEO_SIZE.0, VIDEO_SIZE.1);
    let hex = |bytes: Vec<u8>| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut launch = Launch::new(
        dir.join(BINARY),
        vec!["-vp8-key".into(), hex(key).into(), "-vp8-delta".into(), hex(delta).into()],
    );
    launch.group = true;
    Ok(launch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_version_requires_it_and_leaves_go_sum_to_go() {
        let pinned = files(GO_SDK_VERSION);
        assert!(pinned.iter().any(|(n, _)| *n == "go.sum"), "the pins");
        let other = files("2.18.0");
        let go_mod = &other.iter().find(|(n, _)| *n == "go.mod").expect("go.mod").1;
        assert!(go_mod.contains("require github.com/livekit/server-sdk-go/v2 v2.18.0"), "{go_mod}");
        assert!(go_mod.contains("module faultline/drivers/go"), "{go_mod}");
        assert!(!go_mod.contains(GO_SDK_VERSION), "{go_mod}");
        assert!(other.iter().all(|(n, _)| *n != "go.sum"));
        let env = ProvisionEnv {
            go_version: Some("latest".into()),
            ..ProvisionEnv::isolated("/nonexistent-cache")
        };
        let refused = version(&env).expect_err("not exact");
        assert!(refused.to_string().contains("not an exact version"), "{refused}");
    }
}
