//! Mahimahi link traces: reading and writing the file format (one millisecond timestamp per
//! line, each a delivery opportunity of [`OPPORTUNITY_BYTES`] bytes) and generating traces of a
//! constant or piecewise-constant rate, for tests and for recorded-drive-like scenarios.

use std::time::Duration;

/// The bytes one delivery opportunity carries: a whole IP packet of 1500 bytes (Mahimahi counts
/// 1504, its TUN frames carrying a 4-byte header in front of the IP packet).
pub const OPPORTUNITY_BYTES: usize = 1500;

/// Bits per opportunity × 1000 ms per second: an opportunity a millisecond is this many bits
/// per second.
const BITS_MS: u128 = OPPORTUNITY_BYTES as u128 * 8 * 1000;

/// Why a Mahimahi trace cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// A line that is not what the format expects there.
    #[error("line {line}: found {found:?}, expected {expected}")]
    Line {
        /// 1-based.
        line: usize,
        /// The line's text, trimmed.
        found: String,
        /// What the line should have held.
        expected: String,
    },
    /// No timestamps at all.
    #[error("the trace has no timestamps (expected one millisecond timestamp per line)")]
    Empty,
}

/// Reads a Mahimahi trace: one non-negative integer of milliseconds per line, non-decreasing.
/// Blank lines and surrounding whitespace are ignored.
pub fn parse_mahimahi(text: &str) -> Result<Vec<u32>, TraceError> {
    let mut opportunities: Vec<u32> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let error = |expected: String| TraceError::Line {
            line: index + 1,
            found: line.to_owned(),
            expected,
        };
        let ms: u32 = line
            .parse()
            .map_err(|_| error(format!("a whole number of milliseconds from 0 to {}", u32::MAX)))?;
        match opportunities.last() {
            Some(&previous) if ms < previous => {
                return Err(error(format!("a timestamp of at least {previous} (non-decreasing)")));
            }
            _ => opportunities.push(ms),
        }
    }
    if opportunities.is_empty() {
        return Err(TraceError::Empty);
    }
    Ok(opportunities)
}

/// Writes a Mahimahi trace: one timestamp per line, each line ending in a newline.
pub fn write_mahimahi(opportunities: &[u32]) -> String {
    opportunities.iter().map(|ms| format!("{ms}\n")).collect()
}

/// A trace of `bits_per_second` lasting `duration` (whole milliseconds): the `i`-th opportunity
/// (from 1) at the first millisecond by which `i` opportunities' worth of bits have accrued,
/// `ceil(i · 12 000 000 / bits_per_second)`. At 12 Mbit/s: `1, 2, 3, …`. Rate 0: empty.
pub fn constant_rate_trace(bits_per_second: u64, duration: Duration) -> Vec<u32> {
    let mut out = Vec::new();
    push_segment(&mut out, 0, ms(duration), bits_per_second);
    out
}

/// A piecewise-constant trace: each `(length, bits_per_second)` step follows the previous one;
/// a rate of 0 is an outage without opportunities. A trace's end is its last opportunity, so a
/// trailing outage cannot be expressed and is left out (looped, the trace repeats from there).
pub fn stepped_rate_trace(steps: &[(Duration, u64)]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut elapsed = Duration::ZERO;
    for &(length, bits_per_second) in steps {
        let start = ms(elapsed);
        elapsed = elapsed.saturating_add(length);
        push_segment(&mut out, start, ms(elapsed), bits_per_second);
    }
    out
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).min(u64::from(u32::MAX))
}

/// Appends the opportunities of a constant rate from `start` (exclusive) to `end` ms.
fn push_segment(out: &mut Vec<u32>, start: u64, end: u64, bits_per_second: u64) {
    let rate = u128::from(bits_per_second);
    if rate == 0 || end <= start {
        return;
    }
    let count = u128::from(end - start) * rate / BITS_MS;
    // Each timestamp is at most `end`, which fits in a u32.
    out.extend((1..=count).map(|i| (u128::from(start) + (i * BITS_MS).div_ceil(rate)) as u32));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let trace = vec![0, 0, 3, 3, 7, 4_000_000_000];
        let text = write_mahimahi(&trace);
        assert_eq!(text, "0\n0\n3\n3\n7\n4000000000\n");
        assert_eq!(parse_mahimahi(&text), Ok(trace));
        assert_eq!(parse_mahimahi("\n 1\r\n\n2 \n"), Ok(vec![1, 2]), "blank lines, whitespace");
    }

    #[test]
    fn parse_errors_name_the_line() {
        let line = |text: &str| match parse_mahimahi(text) {
            Err(TraceError::Line { line, found, expected }) => (line, found, expected),
            other => panic!("{text:?} gave {other:?}"),
        };
        let (n, found, expected) = line("1\n2\nabc\n");
        assert_eq!((n, found.as_str()), (3, "abc"));
        assert!(expected.contains("whole number of milliseconds"));
        assert_eq!(line("-5").1, "-5");
        assert_eq!(line("1.5").1, "1.5");
        assert_eq!(line("5000000000").1, "5000000000", "beyond u32");
        let (n, found, expected) = line("1\n\n7\n6");
        assert_eq!((n, found.as_str()), (4, "6"));
        assert!(expected.contains("at least 7"));
        assert_eq!(parse_mahimahi(""), Err(TraceError::Empty));
        assert_eq!(parse_mahimahi("\n \n"), Err(TraceError::Empty));
        let message = parse_mahimahi("x").expect_err("bad").to_string();
        assert!(message.starts_with("line 1: found \"x\", expected"), "{message}");
    }

    #[test]
    fn generators() {
        let second = Duration::from_secs(1);
        assert_eq!(constant_rate_trace(12_000_000, second), (1..=1000).collect::<Vec<u32>>());
        assert_eq!(constant_rate_trace(24_000_000, Duration::from_millis(2)), [1, 1, 2, 2]);
        let slow = constant_rate_trace(1_000_000, second);
        assert_eq!((slow.len(), slow[0], slow[1], slow[82]), (83, 12, 24, 996));
        assert!(constant_rate_trace(0, second).is_empty());
        let stepped = stepped_rate_trace(&[
            (Duration::from_millis(3), 12_000_000),
            (Duration::from_millis(4), 0),
            (Duration::from_millis(2), 6_000_000),
            (Duration::from_millis(5), 0),
        ]);
        assert_eq!(stepped, [1, 2, 3, 9]);
    }
}
