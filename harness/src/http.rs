//! The HTTP client settings every loopback call of the harness uses.
//!
//! Servers are often shared by several tests, each running its own tokio runtime; pooled
//! connections belong to the runtime that opened them, so pooling is disabled.

use std::time::Duration;

/// A client with a whole-request `timeout`, no connection pooling, no proxy and a
/// non-browser User-Agent (toxiproxy refuses `Mozilla/…` agents).
pub(crate) fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0)
        .no_proxy()
        .user_agent(concat!("faultline/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// An error with its causes, e.g. "error sending request: … Connection refused".
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
