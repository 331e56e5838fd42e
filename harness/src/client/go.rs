//! The `go` client: the LiveKit Go SDK (`server-sdk-go` v2, on pion), what bots, recorders
//! and load testers join rooms with, driven by `harness/drivers/go` (a small Go program
//! speaking the driver protocol).
//!
//! Provisioned on first use like livekit-server: the driver's sources and its `go.mod` /
//! `go.sum` (the pins) are written to `<cache>/drivers/go-<pin>` and built there with
//! `go build`, once, under the cache lock; a changed source builds it again. Its synthetic
//! camera sends faultline-sdk's own VP8 frames, given on its command line, so every SDK that
//! faultline publishes from in-process or in Go sends the same picture.

use std::path::PathBuf;

use super::stage::{self, Step};
use super::{ClientError, Sdk};
use crate::provision::ProvisionEnv;
use crate::supervise::Launch;

/// The pinned `server-sdk-go` (the newest v2 that builds from the Go module proxy: v2.20.0
/// needs a fork of pion/webrtc the proxy refuses; see `go.mod`).
pub const GO_SDK_VERSION: &str = "2.19.0";

const FILES: [(&str, &str); 4] = [
    ("go.mod", include_str!("../../drivers/go/go.mod")),
    ("go.sum", include_str!("../../drivers/go/go.sum")),
    ("main.go", include_str!("../../drivers/go/main.go")),
    ("media.go", include_str!("../../drivers/go/media.go")),
];

/// The synthetic camera's size, as faultline-sdk's and the driver's (`media.go`) are.
const VIDEO_SIZE: (u16, u16) = (320, 180);

/// The built driver's file name in its directory.
const BINARY: &str = "faultline-go-driver";

/// The driver's directory in the cache.
fn dir(env: &ProvisionEnv) -> PathBuf {
    stage::dir(env, &format!("go-{GO_SDK_VERSION}"))
}

/// What the build was done for: every file it builds from (a changed source builds again).
fn pins() -> String {
    FILES.iter().map(|(name, text)| format!("== {name}\n{text}")).collect()
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
    let dir = dir(env);
    Ok(if stage::is_ready(&dir, &pins()) {
        format!("server-sdk-go v{GO_SDK_VERSION} built in {}", dir.display())
    } else {
        format!(
            "first use builds server-sdk-go v{GO_SDK_VERSION}'s driver with {} into {}",
            go.display(),
            dir.display()
        )
    })
}

/// The built driver (there once the client is prepared): what a developer compares a build
/// of their own with.
pub(crate) fn pinned_build(env: &ProvisionEnv) -> PathBuf {
    dir(env).join(BINARY)
}

/// Builds the driver if needed and returns how to start it.
pub(crate) async fn prepare(env: &ProvisionEnv) -> Result<Launch, ClientError> {
    let go = go(env)?;
    let dir = dir(env);
    let steps = [Step {
        program: go,
        args: vec!["build".into(), "-trimpath".into(), "-o".into(), BINARY.into(), ".".into()],
        log_name: format!("go-build-driver-{GO_SDK_VERSION}"),
        // The pins are go.sum's: nothing may move them.
        env: vec![("CGO_ENABLED", "0"), ("GOFLAGS", "-mod=readonly")],
    }];
    stage::ensure(Sdk::Go, env, &dir, &FILES, &pins(), &steps).await?;
    let (key, delta) = faultline_sdk::media::synthetic_vp8_frames(VIDEO_SIZE.0, VIDEO_SIZE.1);
    let hex = |bytes: Vec<u8>| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut launch = Launch::new(
        pinned_build(env),
        vec!["-vp8-key".into(), hex(key).into(), "-vp8-delta".into(), hex(delta).into()],
    );
    launch.group = true;
    Ok(launch)
}
