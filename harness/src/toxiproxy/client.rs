//! An async client for toxiproxy's REST API: proxies, their toxics, and guards that undo a
//! toxic or a disabled proxy when dropped.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::{Toxic, ToxicInfo, ToxiproxyError};
use crate::supervise::Liveness;

/// Bound on one REST call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A proxy as toxiproxy reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProxyInfo {
    /// Its name.
    pub name: String,
    /// Where it listens (`127.0.0.1:<port>`).
    pub listen: String,
    /// Where it forwards to.
    pub upstream: String,
    /// Whether it accepts connections.
    pub enabled: bool,
    /// Its toxics.
    #[serde(default)]
    pub toxics: Vec<ToxicInfo>,
}

/// An async client for toxiproxy's REST API.
#[derive(Debug, Clone)]
pub struct ToxiproxyClient {
    base: Url,
    liveness: Option<Liveness>,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    error: String,
}

impl ToxiproxyClient {
    /// A client for the toxiproxy API at `api_url` (e.g. `http://127.0.0.1:8474`).
    pub fn new(api_url: &str) -> Result<Self, ToxiproxyError> {
        let mut base = Url::parse(api_url).map_err(|e| ToxiproxyError::Transport {
            method: "-",
            url: api_url.to_string(),
            reason: format!("not a URL: {e}"),
        })?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self { base, liveness: None })
    }

    /// A client for the toxiproxy-server at `base` that reports a failed call as the
    /// process's death, with its log, when the process has died.
    pub(super) fn watching(base: Url, liveness: Liveness) -> Self {
        Self { base, liveness: Some(liveness) }
    }

    /// The API base URL, ending in `/`.
    pub(super) fn base(&self) -> &Url {
        &self.base
    }

    /// The version toxiproxy reports (`git` for a `go install` build).
    pub async fn version(&self) -> Result<String, ToxiproxyError> {
        #[derive(Deserialize)]
        struct Version {
            version: String,
        }
        let v: Version = self.call(reqwest::Method::GET, "version", None::<&()>).await?;
        Ok(v.version)
    }

    /// Enables every proxy and removes every toxic.
    pub async fn reset(&self) -> Result<(), ToxiproxyError> {
        self.call_no_body(reqwest::Method::POST, "reset", None::<&()>).await
    }

    /// Every proxy.
    pub async fn proxies(&self) -> Result<Vec<ProxyInfo>, ToxiproxyError> {
        let map: std::collections::BTreeMap<String, ProxyInfo> =
            self.call(reqwest::Method::GET, "proxies", None::<&()>).await?;
        Ok(map.into_values().collect())
    }

    /// A proxy by name.
    pub async fn proxy(&self, name: &str) -> Result<Proxy, ToxiproxyError> {
        let info: ProxyInfo =
            self.call(reqwest::Method::GET, &format!("proxies/{name}"), None::<&()>).await?;
        Ok(Proxy { client: self.clone(), info })
    }

    /// Creates an enabled proxy to `upstream` (`host:port`) listening on a free
    /// 127.0.0.1 port chosen by toxiproxy. Fails with HTTP 409 if the name exists.
    pub async fn create_proxy(&self, name: &str, upstream: &str) -> Result<Proxy, ToxiproxyError> {
        self.create_proxy_on(name, "127.0.0.1:0", upstream).await
    }

    /// Creates an enabled proxy listening on `listen` (`host:port`).
    pub async fn create_proxy_on(
        &self,
        name: &str,
        listen: &str,
        upstream: &str,
    ) -> Result<Proxy, ToxiproxyError> {
        let body = serde_json::json!({
            "name": name, "listen": listen, "upstream": upstream, "enabled": true,
        });
        let info: ProxyInfo = self.call(reqwest::Method::POST, "proxies", Some(&body)).await?;
        Ok(Proxy { client: self.clone(), info })
    }

    async fn call<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ToxiproxyError> {
        let (method_name, url, bytes) = self.send(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ToxiproxyError::Transport {
            method: method_name,
            url,
            reason: format!("cannot decode ({e}): {}", String::from_utf8_lossy(&bytes)),
        })
    }

    async fn call_no_body<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ToxiproxyError> {
        self.send(method, path, body).await.map(|_| ())
    }

    async fn send<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(&'static str, String, bytes::Bytes), ToxiproxyError> {
        let method_name = match method.as_str() {
            "GET" => "GET",
            "POST" => "POST",
            "DELETE" => "DELETE",
            _ => "request",
        };
        let url = format!("{}{path}", self.base);
        let transport = |reason: String| ToxiproxyError::Transport {
            method: method_name,
            url: url.clone(),
            reason,
        };
        let client = crate::http::client(CALL_TIMEOUT).map_err(|e| transport(e.to_string()))?;
        let mut request = client.request(method, &url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                if let Some(Err(died)) = self.liveness.as_ref().map(Liveness::check) {
                    return Err(ToxiproxyError::Died(died));
                }
                return Err(transport(crate::http::error_chain(&e)));
            }
        };
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| transport(crate::http::error_chain(&e)))?;
        if status.is_success() {
            return Ok((method_name, url, bytes));
        }
        let message = serde_json::from_slice::<ApiErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
        Err(ToxiproxyError::Api {
            method: method_name,
            path: format!("/{path}"),
            status: status.as_u16(),
            message,
        })
    }
}

/// A proxy on a toxiproxy server.
#[derive(Debug, Clone)]
pub struct Proxy {
    client: ToxiproxyClient,
    info: ProxyInfo,
}

impl Proxy {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// What toxiproxy reported when this handle was made or last refreshed.
    pub fn info(&self) -> &ProxyInfo {
        &self.info
    }

    /// The address clients connect to.
    pub fn listen_addr(&self) -> Result<SocketAddr, ToxiproxyError> {
        self.info.listen.parse().map_err(|e| ToxiproxyError::Transport {
            method: "-",
            url: self.client.base.to_string(),
            reason: format!(
                "proxy {} listens on {:?}, not an address: {e}",
                self.info.name, self.info.listen
            ),
        })
    }

    /// Reloads the proxy's state (enabled, toxics) from toxiproxy.
    pub async fn refresh(&mut self) -> Result<&ProxyInfo, ToxiproxyError> {
        self.info = self.client.proxy(&self.info.name).await?.info;
        Ok(&self.info)
    }

    /// Enables or disables the proxy. Disabled, it stops listening and closes every
    /// connection: the upstream looks unreachable.
    pub async fn set_enabled(&self, enabled: bool) -> Result<(), ToxiproxyError> {
        let body = serde_json::json!({ "enabled": enabled });
        let _: ProxyInfo = self
            .client
            .call(reqwest::Method::POST, &format!("proxies/{}", self.info.name), Some(&body))
            .await?;
        Ok(())
    }

    /// Disables the proxy until the returned guard is dropped or re-enabled.
    pub async fn disable(&self) -> Result<DisabledGuard, ToxiproxyError> {
        self.set_enabled(false).await?;
        Ok(DisabledGuard { proxy: Some(self.clone()) })
    }

    /// Adds a toxic; it is removed when the returned guard is dropped (or removed).
    pub async fn add_toxic(&self, toxic: Toxic) -> Result<ToxicGuard, ToxiproxyError> {
        let info: ToxicInfo = self
            .client
            .call(
                reqwest::Method::POST,
                &format!("proxies/{}/toxics", self.info.name),
                Some(&toxic),
            )
            .await?;
        Ok(ToxicGuard { proxy: Some(self.clone()), name: info.name })
    }

    /// The proxy's toxics.
    pub async fn toxics(&self) -> Result<Vec<ToxicInfo>, ToxiproxyError> {
        self.client
            .call(reqwest::Method::GET, &format!("proxies/{}/toxics", self.info.name), None::<&()>)
            .await
    }

    /// Removes a toxic by name.
    pub async fn remove_toxic(&self, name: &str) -> Result<(), ToxiproxyError> {
        let path = format!("proxies/{}/toxics/{name}", self.info.name);
        self.client.call_no_body(reqwest::Method::DELETE, &path, None::<&()>).await
    }

    /// Deletes the proxy (closing its connections).
    pub async fn delete(self) -> Result<(), ToxiproxyError> {
        let path = format!("proxies/{}", self.info.name);
        self.client.call_no_body(reqwest::Method::DELETE, &path, None::<&()>).await
    }
}

/// Runs `cleanup` to completion from a destructor: on a separate thread with its own
/// small runtime, so it works whether or not the caller is inside a runtime (and even while
/// the caller's runtime shuts down). It blocks the dropping thread for one loopback call.
fn cleanup_blocking<F>(what: String, cleanup: F)
where
    F: std::future::Future<Output = Result<(), ToxiproxyError>> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        match runtime {
            Ok(runtime) => runtime.block_on(cleanup).map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot build a runtime: {e}")),
        }
    })
    .join();
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(%e, "{what} failed"),
        Err(_) => tracing::warn!("{what} panicked"),
    }
}

/// Removes its toxic when dropped. Prefer [`ToxicGuard::remove`] in async code to see
/// errors.
#[derive(Debug)]
#[must_use = "the toxic is removed as soon as the guard is dropped"]
pub struct ToxicGuard {
    proxy: Option<Proxy>,
    name: String,
}

impl ToxicGuard {
    /// The toxic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes the toxic now.
    pub async fn remove(mut self) -> Result<(), ToxiproxyError> {
        match self.proxy.take() {
            Some(proxy) => proxy.remove_toxic(&self.name).await,
            None => Ok(()),
        }
    }
}

impl Drop for ToxicGuard {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            let name = std::mem::take(&mut self.name);
            let what = format!("removing toxic {name} from proxy {}", proxy.name());
            cleanup_blocking(what, async move {
                match proxy.remove_toxic(&name).await {
                    // Already gone (e.g. after a reset): nothing to undo.
                    Err(e) if e.status() == Some(404) => Ok(()),
                    other => other,
                }
            });
        }
    }
}

/// Re-enables its proxy when dropped. Prefer [`DisabledGuard::enable`] in async code.
#[derive(Debug)]
#[must_use = "the proxy is re-enabled as soon as the guard is dropped"]
pub struct DisabledGuard {
    proxy: Option<Proxy>,
}

impl DisabledGuard {
    /// Re-enables the proxy now.
    pub async fn enable(mut self) -> Result<(), ToxiproxyError> {
        match self.proxy.take() {
            Some(proxy) => proxy.set_enabled(true).await,
            None => Ok(()),
        }
    }
}

impl Drop for DisabledGuard {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            let what = format!("re-enabling proxy {}", proxy.name());
            cleanup_blocking(what, async move {
                match proxy.set_enabled(true).await {
                    Err(e) if e.status() == Some(404) => Ok(()),
                    other => other,
                }
            });
        }
    }
}
