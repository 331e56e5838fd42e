//! Fuzz target: decoding arbitrary bytes as a signalling frame, through the SDK's own decode
//! path, never panics — whatever a server (or something posing as one) sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = faultline_sdk::signal::decode_signal_response(data) {
        // Formatting walks every decoded field: it must not panic either.
        let _ = format!("{response:?}");
    }
});
