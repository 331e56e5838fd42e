//! Rate-limiting one direction of a link with `tc` on the sending end's egress (tbf): the
//! kernel's own bottleneck, beside the user-space emulator's (`emulator.rs`), which does
//! what this kernel cannot (delay, jitter, reordering, duplication).
//!
//! The tree is the same for both scopes, so one code path builds it: an htb root whose
//! classes do not limit anything and only sort packets — 1:1 is shaped, 1:2 is not; for
//! [`Scope::Link`] everything goes to 1:1, for [`Scope::Media`] u32 filters send the media
//! ports there — and under 1:1 a tbf. tbf queues up to [`TBF_LATENCY`] of traffic and drops
//! the rest, like a real bottleneck's buffer.

use super::command::run;
use super::error::{NetnsError, Tool};
use super::link::Scope;
use super::{ICE_TCP_PORT, MEDIA_UDP_PORT};

/// How long tbf lets packets wait for tokens before it drops them.
const TBF_LATENCY: &str = "300ms";

/// The rate limit of one direction of one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shaping {
    /// What it applies to.
    pub scope: Scope,
    /// The rate, in bits per second.
    pub rate: u64,
}

/// The sending end of one direction: where its egress is, and which port field names the
/// server's media on packets leaving it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Egress<'a> {
    /// The namespace holding the device.
    pub namespace: &'a str,
    /// The veth end.
    pub device: &'a str,
    /// `"dport"` towards the server, `"sport"` from it.
    pub media_port_field: &'static str,
}

/// Replaces the egress's shaping with `shaping` (`None`: no shaping at all).
pub(super) async fn apply(egress: Egress<'_>, shaping: Option<Shaping>) -> Result<(), NetnsError> {
    let (ns, dev) = (egress.namespace, egress.device);
    // Deleting the default (noqueue) root fails; nothing to remove then.
    let _ = run(Tool::Tc, &["-n", ns, "qdisc", "del", "dev", dev, "root"]).await;
    for command in commands(egress, shaping) {
        let mut args = vec!["-n", ns];
        args.extend(command.iter().map(String::as_str));
        run(Tool::Tc, &args).await?;
    }
    Ok(())
}

/// The `tc` commands (without `-n <namespace>`) that build `shaping` on an empty egress.
fn commands(egress: Egress<'_>, shaping: Option<Shaping>) -> Vec<Vec<String>> {
    let Some(shaping) = shaping else {
        return Vec::new();
    };
    let dev = egress.device;
    let default_class = if shaping.scope == Scope::Media { "2" } else { "1" };
    let mut out: Vec<String> =
        vec![format!("qdisc replace dev {dev} root handle 1: htb default {default_class}")];
    for class in ["1:1", "1:2"] {
        out.push(format!(
            "class add dev {dev} parent 1: classid {class} htb rate 10gbit quantum 60000"
        ));
    }
    if shaping.scope == Scope::Media {
        let field = egress.media_port_field;
        for (prio, protocol, port) in [(1, 17, MEDIA_UDP_PORT), (2, 6, ICE_TCP_PORT)] {
            out.push(format!(
                "filter add dev {dev} parent 1: protocol ip prio {prio} u32 \
                 match ip protocol {protocol} 0xff match ip {field} {port} 0xffff flowid 1:1"
            ));
        }
    }
    // Enough tokens for 20 ms of traffic, and never less than two full frames.
    let bits = shaping.rate;
    let burst = (bits / 8 / 50).max(3028);
    out.push(format!(
        "qdisc add dev {dev} parent 1:1 handle 10: tbf rate {bits}bit burst {burst} \
         latency {TBF_LATENCY}"
    ));
    out.into_iter().map(|c| c.split_whitespace().map(str::to_string).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TO_SERVER: Egress<'static> =
        Egress { namespace: "ns", device: "eth0", media_port_field: "dport" };

    fn lines(shaping: Shaping) -> Vec<String> {
        commands(TO_SERVER, Some(shaping)).into_iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn a_link_rate_sends_everything_through_one_tbf() {
        let got = lines(Shaping { scope: Scope::Link, rate: 1_000_000 });
        assert_eq!(got[0], "qdisc replace dev eth0 root handle 1: htb default 1");
        assert!(!got.iter().any(|c| c.contains("filter")), "{got:#?}");
        assert_eq!(
            got.last().map(String::as_str),
            Some("qdisc add dev eth0 parent 1:1 handle 10: tbf rate 1000000bit burst 3028 latency 300ms")
        );
    }

    #[test]
    fn media_shaping_filters_the_media_ports_into_the_tbf() {
        let got = lines(Shaping { scope: Scope::Media, rate: 8_000_000 });
        assert_eq!(got[0], "qdisc replace dev eth0 root handle 1: htb default 2");
        assert!(
            got.iter()
                .any(|c| c
                    .ends_with("match ip protocol 17 0xff match ip dport 7882 0xffff flowid 1:1")),
            "{got:#?}"
        );
        assert!(
            got.iter()
                .any(|c| c
                    .ends_with("match ip protocol 6 0xff match ip dport 7881 0xffff flowid 1:1")),
            "{got:#?}"
        );
        assert!(
            got.iter().any(|c| c.contains("parent 1:1 handle 10: tbf rate 8000000bit burst 20000")),
            "{got:#?}"
        );
    }

    #[test]
    fn no_rate_is_no_shaping() {
        assert!(commands(TO_SERVER, None).is_empty());
    }
}
