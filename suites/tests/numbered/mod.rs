//! Numbered data packets, for suites that check data flows: packet `n` of a topic carries `n`
//! as four big-endian bytes, so a receiver can tell it got each once, in order.

#![allow(dead_code)] // each test binary uses a different part of it

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::event_log::EventLog;
use faultline_sdk::{DataPacket, RoomEvent};

/// Reliable packet number `n` on `topic`.
pub fn numbered(topic: &str, n: u32) -> DataPacket {
    DataPacket {
        payload: n.to_be_bytes().to_vec(),
        topic: Some(topic.to_owned()),
        ..DataPacket::default()
    }
}

/// Waits (each packet for at most `wait`) until `log` has packets `0..count` on `topic`,
/// and checks that each came once, in order.
pub async fn receives(log: &mut EventLog, topic: &str, count: u32, wait: Duration) -> Result<()> {
    let mut got = Vec::new();
    while got.len() < count as usize {
        let event = log
            .wait_for(
                &format!("{topic} packet {}", got.len()),
                wait,
                |e| matches!(e, RoomEvent::DataReceived { topic: Some(t), .. } if t == topic),
            )
            .await?;
        if let RoomEvent::DataReceived { payload, .. } = event {
            let bytes: [u8; 4] = payload.as_slice().try_into().context("a 4-byte payload")?;
            got.push(u32::from_be_bytes(bytes));
        }
    }
    let expected: Vec<u32> = (0..count).collect();
    ensure!(got == expected, "{topic}: expected {expected:?} once each in order, got {got:?}");
    Ok(())
}
