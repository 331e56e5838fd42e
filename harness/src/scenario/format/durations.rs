//! Durations as scenario files write them: a number and a unit (`250ms`, `3s`, `2m`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a duration written as a number and a unit: `250ms`, `3s`, `1.5s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("`{s}` is not a duration; write a number and a unit: 250ms, 3s, 2m")
    })?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}`; use ms, s or m (e.g. 250ms, 3s, 2m)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{s}` is out of range"))
}

/// Reads a duration written as [`parse_duration`] reads it.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}
