//! The `js` client: `livekit-client` (npm, pinned) in headless Chromium, driven by
//! `harness/drivers/js/driver.mjs` — a Node.js program that starts the browser (through
//! playwright-core), serves the page and the SDK's self-contained UMD bundle on 127.0.0.1,
//! and relays the driver protocol between the harness and the page.
//!
//! Provisioned on first use: `npm ci` of the pinned packages into
//! `<cache>/drivers/js-<pin>/node_modules`, once, under the cache lock. Chromium itself is
//! not provisioned (no registry here ships it as a package faultline could fetch): it comes
//! from `CHROMIUM_BIN` or `PATH`, and `.ci/run` installs Debian's `chromium` where it runs as
//! root.
//!
//! A developer's own build runs instead of the pinned bundle when `FAULTLINE_JS_BUNDLE` names
//! it (a UMD bundle, or a built checkout), and another published version when
//! `FAULTLINE_JS_VERSION` does (npm-installed into `<cache>/drivers/js-versions/<version>`);
//! the pinned npm packages are still installed, for the browser automation, and the driver's
//! hello names the bundle and its hash.

use std::path::PathBuf;

use super::stage::{self, Step};
use super::{ClientError, Sdk};
use crate::provision::ProvisionEnv;
use crate::supervise::Launch;

/// The pinned `livekit-client`.
pub const LIVEKIT_CLIENT_VERSION: &str = "2.23.0";

const DRIVER: &str = include_str!("../../drivers/js/driver.mjs");
const PAGE: &str = include_str!("../../drivers/js/page.html");
const PAGE_SCRIPT: &str = include_str!("../../drivers/js/page.js");
const PACKAGE: &str = include_str!("../../drivers/js/package.json");
const LOCK: &str = include_str!("../../drivers/js/package-lock.json");

/// The driver's directory in the cache.
fn dir(env: &ProvisionEnv) -> PathBuf {
    stage::dir(env, &format!("js-{LIVEKIT_CLIENT_VERSION}"))
}

/// The pins the npm install is done for.
fn pins() -> String {
    format!("{PACKAGE}\n{LOCK}")
}

/// Whether the client can run here, without preparing anything: a sentence saying what is
/// prepared or what first use will do, or why it cannot run.
pub fn readiness(env: &ProvisionEnv) -> Result<String, ClientError> {
    needed(env, "node", "Node.js 18 or later", "apt-get install nodejs")?;
    let chromium = chromium(env)?;
    let mut local = local_bundle(env)?
        .map(|b| format!("; runs the local bundle {} (FAULTLINE_JS_BUNDLE)", b.display()))
        .unwrap_or_default();
    if let Some(version) = published_version(env)? {
        let state = if stage::is_ready(&version_dir(env, version), version) {
            "installed"
        } else {
            "installed with npm on first use"
        };
        local.push_str(&format!("; runs livekit-client {version} ({state}; FAULTLINE_JS_VERSION)"));
    }
    let dir = dir(env);
    if stage::is_ready(&dir, &pins()) {
        return Ok(format!(
            "livekit-client {LIVEKIT_CLIENT_VERSION} prepared in {}; browser {}{local}",
            dir.display(),
            chromium.display()
        ));
    }
    let npm = needed(env, "npm", "npm", "apt-get install npm")?;
    Ok(format!(
        "first use runs {} ci (livekit-client {LIVEKIT_CLIENT_VERSION}, playwright-core) in {}; \
         browser {}{local}",
        npm.display(),
        dir.display(),
        chromium.display()
    ))
}

/// The pinned livekit-client's UMD bundle in the cache (there once the client is prepared).
pub(crate) fn pinned_bundle(env: &ProvisionEnv) -> PathBuf {
    dir(env).join("node_modules/livekit-client/dist/livekit-client.umd.js")
}

/// The bundle `FAULTLINE_JS_BUNDLE` names, resolved: the file itself, or a directory's
/// `dist/livekit-client.umd.js` (a livekit-client checkout or package after its build) or
/// `livekit-client.umd.js`; absolute, so the driver finds it from any directory.
fn local_bundle(env: &ProvisionEnv) -> Result<Option<PathBuf>, ClientError> {
    let Some(given) = &env.js_bundle else { return Ok(None) };
    let refused = |why: String| ClientError::LocalBuild {
        sdk: Sdk::Js,
        variable: "FAULTLINE_JS_BUNDLE",
        path: given.clone(),
        why,
        expected: "a livekit-client UMD bundle (livekit-client.umd.js), or a directory with \
                   dist/livekit-client.umd.js (run the package's build first)",
    };
    let file = if given.is_dir() {
        ["dist/livekit-client.umd.js", "livekit-client.umd.js"]
            .into_iter()
            .map(|name| given.join(name))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| {
                refused("the directory has no dist/livekit-client.umd.js (not built?)".into())
            })?
    } else if given.is_file() {
        given.clone()
    } else {
        return Err(refused("no such file or directory".into()));
    };
    std::path::absolute(&file).map(Some).map_err(|e| refused(e.to_string()))
}

/// The published version `FAULTLINE_JS_VERSION` names, checked to be an exact one.
fn published_version(env: &ProvisionEnv) -> Result<Option<&str>, ClientError> {
    let Some(version) = env.js_version.as_deref() else { return Ok(None) };
    let newest = "npm view livekit-client version";
    stage::exact_version(Sdk::Js, "FAULTLINE_JS_VERSION", version, newest)?;
    Ok(Some(version))
}

/// The directory a published livekit-client other than the pin is installed into.
fn version_dir(env: &ProvisionEnv, version: &str) -> PathBuf {
    stage::dir(env, &format!("js-versions/{version}"))
}

/// The bundle this run loads instead of the pinned one, if any: `FAULTLINE_JS_BUNDLE`'s, or
/// that of the published version `FAULTLINE_JS_VERSION` names (installed with npm into the
/// cache on first use). Both at once is refused: which one was meant?
async fn chosen_bundle(env: &ProvisionEnv) -> Result<Option<PathBuf>, ClientError> {
    let local = local_bundle(env)?;
    let Some(version) = published_version(env)? else { return Ok(local) };
    if local.is_some() {
        return Err(ClientError::Version {
            sdk: Sdk::Js,
            variable: "FAULTLINE_JS_VERSION",
            value: version.to_owned(),
            why: "FAULTLINE_JS_BUNDLE names a bundle too".into(),
            fix: "set one of FAULTLINE_JS_BUNDLE and FAULTLINE_JS_VERSION".into(),
        });
    }
    let dir = version_dir(env, version);
    let steps = if stage::is_ready(&dir, version) {
        Vec::new()
    } else {
        let npm = needed(env, "npm", "npm", "apt-get install npm")?;
        let package = format!("livekit-client@{version}");
        vec![Step {
            program: npm,
            args: [
                "install",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--omit=dev",
                &package,
            ]
            .map(Into::into)
            .to_vec(),
            log_name: format!("js-npm-install-{version}"),
            env: Vec::new(),
        }]
    };
    // A package.json of its own keeps npm from looking for one in the directories above.
    let files = [("package.json", "{ \"name\": \"faultline-js-version\", \"private\": true }\n")];
    stage::ensure(Sdk::Js, env, &dir, &files, version, &steps).await?;
    let bundle = dir.join("node_modules/livekit-client/dist/livekit-client.umd.js");
    if !bundle.is_file() {
        return Err(ClientError::Provision {
            sdk: Sdk::Js,
            message: format!(
                "npm installed livekit-client {version}, but it has no {}",
                bundle.display()
            ),
        });
    }
    Ok(Some(bundle))
}

/// Installs the npm packages if needed and returns how to start the driver.
pub(crate) async fn prepare(env: &ProvisionEnv) -> Result<Launch, ClientError> {
    let sdk = Sdk::Js;
    let node = needed(env, "node", "Node.js 18 or later", "apt-get install nodejs")?;
    let chromium = chromium(env)?;
    let bundle = chosen_bundle(env).await?;
    let dir = dir(env);
    let files = [
        ("driver.mjs", DRIVER),
        ("page.html", PAGE),
        ("page.js", PAGE_SCRIPT),
        ("package.json", PACKAGE),
        ("package-lock.json", LOCK),
    ];
    let pins = pins();
    // npm is needed only to install: a prepared cache runs without it.
    let steps = if stage::is_ready(&dir, &pins) {
        Vec::new()
    } else {
        let npm = needed(env, "npm", "npm", "apt-get install npm")?;
        vec![Step {
            program: npm,
            args: ["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev"]
                .map(Into::into)
                .to_vec(),
            log_name: "js-npm-ci".into(),
            env: Vec::new(),
        }]
    };
    stage::ensure(sdk, env, &dir, &files, &pins, &steps).await?;
    let mut launch = Launch::new(node, vec![dir.join("driver.mjs").into_os_string()]);
    launch.env.push(("FAULTLINE_JS_MODULES".into(), dir.join("node_modules").into_os_string()));
    launch.env.push(("CHROMIUM_BIN".into(), chromium.into_os_string()));
    // Set (or cleared) explicitly: the environment given, not the process's, decides.
    let bundle = bundle.map(PathBuf::into_os_string).unwrap_or_default();
    launch.env.push(("FAULTLINE_JS_BUNDLE".into(), bundle));
    launch.group = true;
    Ok(launch)
}

/// `name` on `PATH`, or [`ClientError::Unavailable`] naming `what` and `install`.
fn needed(
    env: &ProvisionEnv,
    name: &str,
    what: &str,
    install: &str,
) -> Result<PathBuf, ClientError> {
    env.find_on_path(name).ok_or_else(|| ClientError::Unavailable {
        sdk: Sdk::Js,
        missing: format!("{what} (`{name}`) is not on PATH"),
        fix: format!("install it (Debian/Ubuntu: `{install}`)"),
    })
}

/// The browser: `CHROMIUM_BIN`, else `chromium`, `chromium-browser` or `google-chrome` on
/// `PATH`.
fn chromium(env: &ProvisionEnv) -> Result<PathBuf, ClientError> {
    if let Some(bin) = &env.chromium_bin {
        return Ok(bin.clone());
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(|name| env.find_on_path(name))
        .ok_or_else(|| ClientError::Unavailable {
            sdk: Sdk::Js,
            missing: "Chromium is not on PATH and CHROMIUM_BIN is not set".into(),
            fix: "install it (Debian: `apt-get install chromium`; Ubuntu: a Chromium or Chrome \
                  package) or set CHROMIUM_BIN to the browser's executable"
                .into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_bundle(path: PathBuf) -> ProvisionEnv {
        ProvisionEnv { js_bundle: Some(path), ..ProvisionEnv::isolated("/nonexistent-cache") }
    }

    #[test]
    fn a_local_bundle_is_a_file_or_a_built_directory() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let dist = dir.path().join("dist");
        std::fs::create_dir(&dist).expect("dist/");
        let bundle = dist.join("livekit-client.umd.js");

        let unbuilt = local_bundle(&with_bundle(dir.path().to_owned()));
        assert!(
            unbuilt.as_ref().is_err_and(|e| e.to_string().contains("not built?")),
            "{unbuilt:?}"
        );
        std::fs::write(&bundle, "/* a bundle */").expect("the bundle");
        for given in [dir.path().to_owned(), bundle.clone()] {
            let found = local_bundle(&with_bundle(given)).expect("resolved");
            assert_eq!(found, Some(bundle.clone()));
        }
        let missing = local_bundle(&with_bundle(dir.path().join("nope.js")));
        assert!(
            missing.as_ref().is_err_and(|e| e
                .to_string()
                .contains("cannot use the build FAULTLINE_JS_BUNDLE=",)
                && e.to_string().contains("no such file")),
            "{missing:?}"
        );
        assert_eq!(local_bundle(&ProvisionEnv::isolated("/c")).expect("unset is fine"), None);
    }
}
