//! The project's own cellular drive trace (`fixtures/traces/cellular-drive.mahimahi`, used by
//! the cellular-drive library scenario) is what [`stepped_rate_trace`] makes of the steps
//! below: generated here, never downloaded. `FAULTLINE_WRITE_FIXTURES=1 cargo test -p
//! faultline-link --test drive_trace` writes it again after a change to the steps.

use std::path::Path;
use std::time::Duration;

use faultline_link::{parse_mahimahi, stepped_rate_trace, write_mahimahi};

/// A 20 s drive out of town, as LTE measurements of moving phones look in outline: good
/// coverage, a cell edge, a dead spot of 2 s, a handover to a busy cell, and good again.
const DRIVE: [(u64, u64); 6] = [
    (5_000, 4_000_000),
    (4_000, 1_500_000),
    (3_000, 500_000),
    (2_000, 0),
    (4_000, 2_000_000),
    (2_000, 6_000_000),
];

fn drive() -> Vec<u32> {
    let steps: Vec<(Duration, u64)> =
        DRIVE.iter().map(|&(ms, bits)| (Duration::from_millis(ms), bits)).collect();
    stepped_rate_trace(&steps)
}

#[test]
fn the_cellular_drive_fixture_is_the_generated_trace() -> Result<(), Box<dyn std::error::Error>> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/traces/cellular-drive.mahimahi");
    let generated = drive();
    if std::env::var_os("FAULTLINE_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, write_mahimahi(&generated))?;
    }
    let committed = parse_mahimahi(&std::fs::read_to_string(&path)?)?;
    assert!(
        committed == generated,
        "{} is stale: regenerate it (see the module docs)",
        path.display()
    );
    // The dead spot is a gap of 2 s without opportunities, 12 s in.
    let gap = committed.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    assert!((2_000..2_010).contains(&gap), "the longest gap is {gap} ms");
    Ok(())
}
