//! The byte stream under the signalling WebSocket: a TCP connection from the [`Network`],
//! wrapped in TLS (tokio-rustls, webpki roots) for `wss`; and the one plain HTTP request the
//! SDK makes, `GET /rtc/validate`, over the same kind of stream.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use url::Url;

use super::SignalError;
use crate::net::{AsyncStream, Network};

/// An open stream to the signalling server and the local address it leaves from.
pub(crate) struct Opened {
    pub stream: Box<dyn AsyncStream>,
    pub local_addr: SocketAddr,
}

/// Opens TCP (and TLS for `wss`/`https`) to `url`'s host and port.
pub(crate) async fn open(network: &Arc<dyn Network>, url: &Url) -> Result<Opened, SignalError> {
    let host = url.host_str().unwrap_or_default().to_owned();
    let secure = matches!(url.scheme(), "wss" | "https");
    let port = url.port_or_known_default().unwrap_or(if secure { 443 } else { 80 });
    let conn = network
        .connect_tcp(&host, port)
        .await
        .map_err(|source| SignalError::Connect { addr: format!("{host}:{port}"), source })?;
    if !secure {
        return Ok(Opened { stream: conn.stream, local_addr: conn.local_addr });
    }
    let config = tls_config()?;
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| SignalError::Tls(format!("{host} is not a valid TLS server name: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, conn.stream)
        .await
        .map_err(|e| SignalError::Tls(format!("TLS handshake with {host}:{port} failed: {e}")))?;
    Ok(Opened { stream: Box::new(tls), local_addr: conn.local_addr })
}

/// The client TLS configuration: aws-lc-rs crypto and the webpki root certificates.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, SignalError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| {
                    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
                })
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| SignalError::Tls(format!("cannot set up TLS: {e}")))
}

/// Asks `/rtc/validate` why a join was refused and returns the server's status and text
/// (`None` if the server could not be asked within `limit`).
pub(crate) async fn validate(
    network: &Arc<dyn Network>,
    url: &Url,
    limit: Duration,
) -> Option<(u16, String)> {
    tokio::time::timeout(limit, async {
        let mut opened = open(network, url).await.ok()?;
        let host = url.host_str().unwrap_or_default();
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: faultline-sdk\r\n\
             Connection: close\r\n\r\n"
        );
        opened.stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        opened.stream.take(64 * 1024).read_to_end(&mut response).await.ok()?;
        parse_http_response(&response)
    })
    .await
    .ok()
    .flatten()
}

/// The status code and body text of a raw HTTP/1.1 response.
fn parse_http_response(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.trim()).unwrap_or_default();
    Some((status, body.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn http_responses_yield_status_and_body() {
        let raw = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\n\r\ninvalid token\n";
        assert_eq!(parse_http_response(raw), Some((401, "invalid token".to_owned())));
        assert_eq!(parse_http_response(b"garbage"), None);
    }

    #[test]
    fn tls_configuration_builds() {
        assert!(tls_config().is_ok());
    }
}
