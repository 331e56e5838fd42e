//! The `LIVEKIT_URL` source: an already running livekit-server, validated and probed.

use std::time::Duration;

use url::Url;

use super::order::Search;
use super::{ProvisionError, Source};

/// Validates and probes `LIVEKIT_URL` when it is set, recording the attempt. A set but
/// unusable URL is an error, not a skipped source: the user asked for that server.
pub(super) async fn find(search: &mut Search<'_>) -> Result<Option<Source>, ProvisionError> {
    let env = search.env;
    let Some(raw) = &env.livekit_url else {
        search.record("LIVEKIT_URL", false, "not set".into());
        return Ok(None);
    };
    let url = external_url(raw)?;
    probe_external(raw, &url, env.external_probe_timeout).await?;
    Ok(search.choose("LIVEKIT_URL", format!("{url} answers GET /"), Source::External { url }))
}

/// Validates an external server URL: scheme ws/wss/http/https, a host, a port.
fn external_url(raw: &str) -> Result<Url, ProvisionError> {
    let invalid = |reason: &str| ProvisionError::InvalidExternalUrl {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(raw).map_err(|e| invalid(&format!("cannot parse it ({e})")))?;
    if !matches!(url.scheme(), "ws" | "wss" | "http" | "https") {
        return Err(invalid(&format!("scheme {:?} is not ws, wss, http or https", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if url.port_or_known_default().is_none() {
        return Err(invalid("it has no port"));
    }
    Ok(url)
}

/// The HTTP(S) URL of a server given by a ws/wss/http/https URL, with path `/`.
pub fn http_base(url: &Url) -> Url {
    let mut http = url.clone();
    let scheme = match url.scheme() {
        "wss" | "https" => "https",
        _ => "http",
    };
    // Switching between these special schemes cannot fail.
    let _ = http.set_scheme(scheme);
    http.set_path("/");
    http.set_query(None);
    http
}

async fn probe_external(raw: &str, url: &Url, timeout: Duration) -> Result<(), ProvisionError> {
    let probe = http_base(url);
    let unreachable = |reason: String| ProvisionError::ExternalUnreachable {
        url: raw.to_string(),
        probe: probe.to_string(),
        timeout,
        reason,
    };
    let client = crate::http::client(timeout).map_err(|e| unreachable(e.to_string()))?;
    let response = client
        .get(probe.clone())
        .send()
        .await
        .map_err(|e| unreachable(crate::http::error_chain(&e)))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(unreachable(format!("answered HTTP {}", response.status())))
    }
}
