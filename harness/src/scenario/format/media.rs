//! The `media` fault's settings — how the target's media path degrades — checked, and
//! turned into the link emulator's [`Condition`].
//!
//! `loss_percent` and `delay` alone are what faultline-sdk's socket wrappers (and the
//! simulation) do; every other setting needs the user-space link emulator, which runs in
//! network namespaces and works for every SDK ([`MediaFault::needs_emulator`]).

use std::path::Path;
use std::time::Duration;

use faultline_link::{Condition, Delay, Distribution, Loss, Queue, Rate, Trace};
use serde::Deserialize;

use super::durations::opt_duration;
use super::faults::Direction;

/// The drop-tail queue in front of a `rate_kbps` or `trace` bottleneck when the file sets
/// no `queue_packets`: Mahimahi's and Pantheon's emulators are given queues of this order.
pub const DEFAULT_QUEUE_PACKETS: usize = 100;

/// The settings of a `media` fault.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaFault {
    /// Which way.
    #[serde(default)]
    pub direction: Direction,
    /// Share of packets dropped at random, 0 to 100; 100 drops everything.
    #[serde(default)]
    pub loss_percent: Option<f64>,
    /// Delay added to every packet.
    #[serde(default, deserialize_with = "opt_duration")]
    pub delay: Option<Duration>,
    /// How far each packet's delay strays from `delay` (the spread of `distribution`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub jitter: Option<Duration>,
    /// The shape of the jitter: `uniform` (the default: `delay` ± `jitter`), `normal`
    /// (standard deviation `jitter`), `pareto`, `pareto-normal` — netem's four.
    #[serde(default)]
    pub distribution: Option<Distribution>,
    /// How much each random draw (jitter, and `loss_percent`'s) follows the one before,
    /// 0 to 100, as netem's correlation.
    #[serde(default)]
    pub correlation_percent: Option<f64>,
    /// Let jitter reorder packets (by default a packet never overtakes an earlier one, as
    /// on most real paths: WebRTC takes reordering for loss).
    #[serde(default)]
    pub reorder: bool,
    /// Share of packets sent twice, 0 to 100.
    #[serde(default)]
    pub duplicate_percent: Option<f64>,
    /// Losses in bursts (a Gilbert–Elliott model), in place of `loss_percent`.
    #[serde(default)]
    pub burst_loss: Option<BurstLoss>,
    /// A bottleneck of this many kilobits per second, with a drop-tail queue.
    #[serde(default)]
    pub rate_kbps: Option<u64>,
    /// The bottleneck's queue, in packets (default [`DEFAULT_QUEUE_PACKETS`]).
    #[serde(default)]
    pub queue_packets: Option<usize>,
    /// A recorded link's capacity: a Mahimahi trace file (one millisecond timestamp per
    /// 1500-byte delivery opportunity), relative to the scenario file.
    #[serde(default)]
    pub trace: Option<String>,
    /// Replay the trace once instead of looping it (Mahimahi loops).
    #[serde(default)]
    pub trace_once: bool,
    /// The trace's opportunities, read from `trace` when the scenario is loaded.
    #[serde(skip)]
    pub trace_opportunities: Vec<u32>,
}

/// Losses in bursts: a Gilbert–Elliott model in a user's words. Every packet, a link
/// outside a burst enters one with `enter_percent`, and one inside a burst leaves it with
/// `leave_percent` (so bursts last 100 / `leave_percent` packets on average).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurstLoss {
    /// Chance per packet that a burst starts (Gilbert–Elliott's p), 0 to 100.
    pub enter_percent: f64,
    /// Chance per packet in a burst that it ends (r), 0 to 100.
    pub leave_percent: f64,
    /// Share of packets lost inside a burst (1 − h), default 100.
    #[serde(default = "hundred")]
    pub loss_in_burst_percent: f64,
    /// Share of packets lost outside bursts (1 − k), default 0.
    #[serde(default)]
    pub loss_outside_percent: f64,
}

fn hundred() -> f64 {
    100.0
}

impl MediaFault {
    /// Whether only the link emulator can do this (anything beyond `loss_percent` and
    /// `delay`).
    pub fn needs_emulator(&self) -> bool {
        self.jitter.is_some()
            || self.distribution.is_some()
            || self.correlation_percent.is_some()
            || self.reorder
            || self.duplicate_percent.is_some()
            || self.burst_loss.is_some()
            || self.rate_kbps.is_some()
            || self.trace.is_some()
    }

    /// The emulator's condition for this fault (the trace read already).
    pub fn condition(&self) -> Condition {
        let correlation = self.correlation_percent.unwrap_or(0.0) / 100.0;
        let queue = Queue::Packets(self.queue_packets.unwrap_or(DEFAULT_QUEUE_PACKETS));
        let loss = match (self.burst_loss, self.loss_percent) {
            (Some(b), _) => Loss::GilbertElliott {
                p: b.enter_percent / 100.0,
                r: b.leave_percent / 100.0,
                loss_good: b.loss_outside_percent / 100.0,
                loss_bad: b.loss_in_burst_percent / 100.0,
            },
            (None, Some(percent)) => Loss::Random { probability: percent / 100.0, correlation },
            (None, None) => Loss::None,
        };
        Condition {
            delay: Delay {
                base: self.delay.unwrap_or_default(),
                jitter: self.jitter.unwrap_or_default(),
                distribution: self.distribution.unwrap_or_default(),
                correlation,
            },
            reorder: self.reorder,
            loss,
            duplicate: self.duplicate_percent.unwrap_or(0.0) / 100.0,
            rate: self.rate_kbps.map(|kbps| Rate { bits_per_second: kbps * 1000, queue }),
            trace: self.trace.as_ref().map(|_| Trace {
                opportunities: self.trace_opportunities.clone(),
                looped: !self.trace_once,
                queue,
            }),
            delay_steps: Vec::new(),
        }
    }

    /// A one-line description: what is set, in the file's words.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("media {}", self.direction)];
        if let Some(p) = self.loss_percent {
            parts.push(format!("loss {p}%"));
        }
        if let Some(b) = self.burst_loss {
            parts.push(format!(
                "burst loss (enter {}%, leave {}%)",
                b.enter_percent, b.leave_percent
            ));
        }
        if let Some(d) = self.delay {
            parts.push(format!("delay {d:?}"));
        }
        if let Some(j) = self.jitter {
            let shape = self.distribution.unwrap_or_default();
            parts.push(format!("jitter {j:?} {shape:?}").to_lowercase());
        }
        if self.reorder {
            parts.push("reordering".into());
        }
        if let Some(p) = self.duplicate_percent {
            parts.push(format!("duplicate {p}%"));
        }
        if let Some(kbps) = self.rate_kbps {
            parts.push(format!("rate {kbps} kbit/s"));
        }
        if let Some(t) = &self.trace {
            parts.push(format!("trace {t}{}", if self.trace_once { " once" } else { "" }));
        }
        parts.join(" ")
    }

    /// Reads the trace file, relative to the directory of `scenario_file`.
    pub(super) fn load_trace(&mut self, scenario_file: &Path) -> Result<(), String> {
        let Some(name) = &self.trace else { return Ok(()) };
        let path = scenario_file.parent().unwrap_or(Path::new(".")).join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read the trace `{name}` ({}): {e}; `trace` names a Mahimahi trace file, \
                 relative to the scenario file",
                path.display()
            )
        })?;
        self.trace_opportunities = faultline_link::parse_mahimahi(&text)
            .map_err(|e| format!("the trace `{name}` ({}): {e}", path.display()))?;
        if !self.trace_once && self.trace_opportunities.last() == Some(&0) {
            return Err(format!(
                "the trace `{name}` ends at 0 ms, so it cannot loop; give it a later last \
                 timestamp or set `trace_once = true`"
            ));
        }
        Ok(())
    }

    pub(super) fn check(&self) -> Result<(), String> {
        let percent = |name: &str, value: Option<f64>| match value {
            Some(v) if !(0.0..=100.0).contains(&v) => {
                Err(format!("`{name}` must be between 0 and 100, not {v}"))
            }
            _ => Ok(()),
        };
        percent("loss_percent", self.loss_percent)?;
        percent("correlation_percent", self.correlation_percent)?;
        percent("duplicate_percent", self.duplicate_percent)?;
        if let Some(b) = self.burst_loss {
            percent("burst_loss.enter_percent", Some(b.enter_percent))?;
            percent("burst_loss.leave_percent", Some(b.leave_percent))?;
            percent("burst_loss.loss_in_burst_percent", Some(b.loss_in_burst_percent))?;
            percent("burst_loss.loss_outside_percent", Some(b.loss_outside_percent))?;
            if b.leave_percent == 0.0 {
                return Err("`burst_loss.leave_percent` of 0 never ends a burst; to drop \
                            everything use `loss_percent = 100`"
                    .into());
            }
            if self.loss_percent.is_some() {
                return Err("`burst_loss` and `loss_percent` are two loss models; give one \
                            (`burst_loss.loss_outside_percent` is the loss between bursts)"
                    .into());
            }
        }
        if self.jitter.is_none() {
            for (set, name) in
                [(self.distribution.is_some(), "distribution"), (self.reorder, "reorder")]
            {
                if set {
                    return Err(format!("`{name}` shapes the jitter; give `jitter` too"));
                }
            }
        }
        if self.trace_once && self.trace.is_none() {
            return Err("`trace_once` is about a `trace`; give the trace file".into());
        }
        if self.rate_kbps == Some(0) {
            return Err("`rate_kbps` must be at least 1; to drop everything use \
                        `loss_percent = 100`"
                .into());
        }
        if self.rate_kbps.is_some() && self.trace.is_some() {
            return Err("`rate_kbps` and `trace` are two bottlenecks; give one".into());
        }
        match self.queue_packets {
            Some(0) => Err("`queue_packets` must be at least 1".into()),
            Some(_) if self.rate_kbps.is_none() && self.trace.is_none() => {
                Err("`queue_packets` is the queue of a bottleneck; give `rate_kbps` or `trace`"
                    .into())
            }
            _ if self.loss_percent.is_none() && self.delay.is_none() && !self.needs_emulator() => {
                Err("a `media` fault needs `loss_percent`, `delay`, or another link condition \
                     (`jitter`, `duplicate_percent`, `burst_loss`, `rate_kbps`, `trace`)"
                    .into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use faultline_link::{Distribution, Loss, Queue};

    use crate::scenario::format::{Fault, Scenario};

    fn media(settings: &str, dir: &Path) -> Result<super::MediaFault, String> {
        let text = format!(
            "name = \"t\"\n[[participant]]\nidentity = \"a\"\n\n[[fault]]\nat = \"1s\"\n\
             type = \"media\"\n{settings}\n"
        );
        let scenario = Scenario::parse(&text, &dir.join("s.toml")).map_err(|e| e.to_string())?;
        match &scenario.faults[0].fault {
            Fault::Media(m) => Ok(m.clone()),
            other => Err(format!("parsed as {other:?}")),
        }
    }

    #[test]
    fn every_setting_reaches_the_condition() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("drive.trace"), "5\n10\n10\n20\n")
            .map_err(|e| e.to_string())?;
        let m = media(
            "delay = \"80ms\"\njitter = \"20ms\"\ndistribution = \"pareto-normal\"\n\
             correlation_percent = 25\nreorder = true\nduplicate_percent = 1\n\
             burst_loss = { enter_percent = 2, leave_percent = 25 }\ntrace = \"drive.trace\"\n\
             queue_packets = 30",
            dir.path(),
        )?;
        assert!(m.needs_emulator());
        let c = m.condition();
        assert_eq!(c.delay.base, Duration::from_millis(80));
        assert_eq!(c.delay.jitter, Duration::from_millis(20));
        assert_eq!(c.delay.distribution, Distribution::ParetoNormal);
        assert_eq!(c.delay.correlation, 0.25);
        assert!(c.reorder);
        assert_eq!(c.duplicate, 0.01);
        assert_eq!(
            c.loss,
            Loss::GilbertElliott { p: 0.02, r: 0.25, loss_good: 0.0, loss_bad: 1.0 }
        );
        assert_eq!(c.validate(), Ok(()));
        let trace = c.trace.ok_or("no trace")?;
        assert_eq!((trace.opportunities, trace.looped), (vec![5, 10, 10, 20], true));
        assert_eq!(trace.queue, Queue::Packets(30));
        Ok(())
    }

    #[test]
    fn loss_and_delay_alone_stay_with_the_socket_wrappers() -> Result<(), String> {
        let m = media("loss_percent = 5\ndelay = \"100ms\"", Path::new("."))?;
        assert!(!m.needs_emulator());
        let rated = media("rate_kbps = 500", Path::new("."))?;
        assert_eq!(rated.condition().rate.map(|r| r.bits_per_second), Some(500_000));
        Ok(())
    }

    #[test]
    fn bad_settings_are_refused_naming_the_fix() {
        let here = Path::new(".");
        for (settings, says) in [
            ("distribution = \"normal\"", "give `jitter` too"),
            ("jitter = \"5ms\"\nloss_percent = 3\nburst_loss = { enter_percent = 1, leave_percent = 10 }", "two loss models"),
            ("burst_loss = { enter_percent = 1, leave_percent = 0 }", "never ends a burst"),
            ("duplicate_percent = 120", "between 0 and 100"),
            ("rate_kbps = 100\ntrace = \"x\"", "two bottlenecks"),
            ("queue_packets = 10\ndelay = \"5ms\"", "give `rate_kbps` or `trace`"),
            ("trace = \"no-such.trace\"", "cannot read the trace"),
            ("jitter = \"5ms\"\nspeed = 3", "unknown field `speed`"),
            ("direction = \"both\"", "needs `loss_percent`, `delay`"),
        ] {
            match media(settings, here) {
                Ok(m) => panic!("{settings:?} parsed: {m:?}"),
                Err(e) => assert!(e.contains(says), "{settings:?}: {e}"),
            }
        }
    }

    #[test]
    fn a_malformed_trace_is_refused_with_its_line() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("bad.trace"), "1\n2\nfast\n").map_err(|e| e.to_string())?;
        let e = media("trace = \"bad.trace\"", dir.path()).err().ok_or("a bad trace parsed")?;
        assert!(e.contains("bad.trace") && e.contains("line 3"), "{e}");
        Ok(())
    }
}
