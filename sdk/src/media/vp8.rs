//! A synthetic VP8 stream that any VP8 decoder accepts, written without a codec library:
//! a flat grey picture whose key frames code every macroblock as DC-predicted with no
//! residual, and whose inter frames ("delta frames") do the same from the frame header of
//! an inter frame, so they decode only after a key frame, as a real encoder's do.
//!
//! Both are tiny (a few dozen bytes whatever the size) because every macroblock is
//! "skipped": no DCT tokens. The bit layout follows RFC 6386: the frame tag and key-frame
//! start code (§9.1), the first partition's header fields (§9.2–9.11, §19.2), the
//! per-macroblock header (§19.3), all through the boolean entropy encoder (§7).

use super::vp8_tables::{COEFF_UPDATE_PROBS, MV_UPDATE_PROBS};

/// RFC 6386 §7's boolean entropy encoder.
struct BoolEncoder {
    out: Vec<u8>,
    range: u32,
    bottom: u32,
    bit_count: u32,
}

impl BoolEncoder {
    fn new() -> Self {
        BoolEncoder { out: Vec::new(), range: 255, bottom: 0, bit_count: 24 }
    }

    /// Propagates a carry into the bytes already written.
    fn carry(&mut self) {
        for byte in self.out.iter_mut().rev() {
            if *byte == 255 {
                *byte = 0;
            } else {
                *byte += 1;
                return;
            }
        }
    }

    /// Writes `bit`, which is 0 with probability `prob / 256`.
    fn bool(&mut self, bit: bool, prob: u8) {
        let split = 1 + (((self.range - 1) * u32::from(prob)) >> 8);
        if bit {
            self.bottom = self.bottom.wrapping_add(split);
            self.range -= split;
        } else {
            self.range = split;
        }
        while self.range < 128 {
            self.range <<= 1;
            if self.bottom & (1 << 31) != 0 {
                self.carry();
            }
            self.bottom <<= 1;
            self.bit_count -= 1;
            if self.bit_count == 0 {
                self.out.push((self.bottom >> 24) as u8);
                self.bottom &= (1 << 24) - 1;
                self.bit_count = 8;
            }
        }
    }

    /// `L(n)`: an unsigned `bits`-bit literal, most significant bit first, at even odds.
    fn literal(&mut self, value: u32, bits: u32) {
        for shift in (0..bits).rev() {
            self.bool((value >> shift) & 1 == 1, 128);
        }
    }

    /// Flushes the interval (as libvpx does: 32 zero bits at even odds).
    fn finish(mut self) -> Vec<u8> {
        for _ in 0..32 {
            self.bool(false, 128);
        }
        self.out
    }
}

/// The quantizer index written in every frame header (any value will do: no residual).
const Q_INDEX: u32 = 40;
/// `prob_skip_false`: the chance a macroblock is *not* skipped; all are.
const PROB_SKIP_FALSE: u8 = 1;
/// `prob_intra` in inter frames: the chance a macroblock is intra coded; all are.
const PROB_INTRA: u8 = 255;

/// The header fields both frame types share, from `segmentation_enabled` to the
/// quantizer indices.
fn common_header(e: &mut BoolEncoder) {
    e.literal(0, 1); // segmentation_enabled
    e.literal(0, 1); // filter_type: normal
    e.literal(0, 6); // loop_filter_level: off
    e.literal(0, 3); // sharpness_level
    e.literal(0, 1); // loop_filter_adj_enable
    e.literal(0, 2); // log2_nbr_of_dct_partitions: one token partition
    e.literal(Q_INDEX, 7); // y_ac_qi
    for _ in 0..5 {
        e.literal(0, 1); // no delta for y_dc, y2_dc, y2_ac, uv_dc, uv_ac
    }
}

/// `token_prob_update()`: keep every default token probability.
fn no_token_prob_updates(e: &mut BoolEncoder) {
    for prob in COEFF_UPDATE_PROBS.iter().flatten().flatten().flatten() {
        e.bool(false, *prob);
    }
}

/// Macroblocks of a `width` × `height` picture.
fn macroblocks(width: u16, height: u16) -> usize {
    usize::from(width.div_ceil(16)) * usize::from(height.div_ceil(16))
}

/// The first partition of a key frame.
fn key_partition(width: u16, height: u16) -> Vec<u8> {
    let mut e = BoolEncoder::new();
    e.literal(0, 1); // color_space
    e.literal(0, 1); // clamping_type
    common_header(&mut e);
    e.literal(0, 1); // refresh_entropy_probs: this frame only
    no_token_prob_updates(&mut e);
    e.literal(1, 1); // mb_no_coeff_skip
    e.literal(u32::from(PROB_SKIP_FALSE), 8);
    for _ in 0..macroblocks(width, height) {
        e.bool(true, PROB_SKIP_FALSE); // mb_skip_coeff
                                       // kf_ymode_tree with kf_ymode_prob {145, 156, 163, 128}: DC_PRED is 1, 0, 0.
        e.bool(true, 145);
        e.bool(false, 156);
        e.bool(false, 163);
        // uv_mode_tree with kf_uv_mode_prob {142, 114, 183}: DC_PRED is 0.
        e.bool(false, 142);
    }
    e.finish()
}

/// The first partition of an inter frame: every macroblock intra coded, DC predicted.
fn inter_partition(width: u16, height: u16) -> Vec<u8> {
    let mut e = BoolEncoder::new();
    common_header(&mut e);
    e.literal(0, 1); // refresh_golden_frame
    e.literal(0, 1); // refresh_alternate_frame
    e.literal(0, 2); // copy_buffer_to_golden
    e.literal(0, 2); // copy_buffer_to_alternate
    e.literal(0, 1); // sign_bias_golden
    e.literal(0, 1); // sign_bias_alternate
    e.literal(0, 1); // refresh_entropy_probs: this frame only
    e.literal(1, 1); // refresh_last
    no_token_prob_updates(&mut e);
    e.literal(1, 1); // mb_no_coeff_skip
    e.literal(u32::from(PROB_SKIP_FALSE), 8);
    e.literal(u32::from(PROB_INTRA), 8); // prob_intra
    e.literal(128, 8); // prob_last
    e.literal(128, 8); // prob_gf
    e.literal(0, 1); // intra_16x16_prob_update_flag
    e.literal(0, 1); // intra_chroma_prob_update_flag
    for prob in MV_UPDATE_PROBS.iter().flatten() {
        e.bool(false, *prob); // mv_prob_update: none
    }
    for _ in 0..macroblocks(width, height) {
        e.bool(true, PROB_SKIP_FALSE); // mb_skip_coeff
        e.bool(false, PROB_INTRA); // is_inter_mb: no
        e.bool(false, 112); // ymode_tree with ymode_prob {112, …}: DC_PRED is 0
        e.bool(false, 162); // uv_mode_tree with uv_mode_prob {162, …}: DC_PRED is 0
    }
    e.finish()
}

/// The token partition: nothing is read from it (every macroblock is skipped), but
/// decoders refuse an empty one.
const TOKEN_PARTITION: [u8; 2] = [0, 0];

/// A whole frame: the 3-byte tag, the key frame's start code and size, the partitions.
fn frame(key: bool, width: u16, height: u16, partition: Vec<u8>) -> Vec<u8> {
    let size = u32::try_from(partition.len()).expect("a first partition of a few bytes");
    // frame_type (0 = key), version 0, show_frame 1, first_part_size (19 bits).
    let tag = u32::from(!key) | (1 << 4) | (size << 5);
    let mut out = Vec::with_capacity(10 + partition.len() + TOKEN_PARTITION.len());
    out.extend_from_slice(&tag.to_le_bytes()[..3]);
    if key {
        out.extend_from_slice(&[0x9d, 0x01, 0x2a]);
        out.extend_from_slice(&(width & 0x3fff).to_le_bytes());
        out.extend_from_slice(&(height & 0x3fff).to_le_bytes());
    }
    out.extend_from_slice(&partition);
    out.extend_from_slice(&TOKEN_PARTITION);
    out
}

/// A VP8 key frame of a flat grey `width` × `height` picture.
pub(crate) fn key_frame(width: u16, height: u16) -> Vec<u8> {
    frame(true, width, height, key_partition(width, height))
}

/// A VP8 inter frame for the same picture (decodable after a key frame of that size).
pub(crate) fn delta_frame(width: u16, height: u16) -> Vec<u8> {
    frame(false, width, height, inter_partition(width, height))
}

/// Whether `frame` is a VP8 key frame (the tag's low bit clear, the start code in place),
/// as livekit-server and receivers judge it.
pub(crate) fn is_key_frame(frame: &[u8]) -> bool {
    frame.len() >= 10 && frame[0] & 1 == 0 && frame[3..6] == [0x9d, 0x01, 0x2a]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6386 §7's boolean decoder, to read back what the encoder wrote.
    struct BoolDecoder<'a> {
        data: &'a [u8],
        pos: usize,
        value: u32,
        range: u32,
        bit_count: u32,
    }

    impl<'a> BoolDecoder<'a> {
        fn new(data: &'a [u8]) -> Self {
            let mut d = BoolDecoder { data, pos: 0, value: 0, range: 255, bit_count: 0 };
            for _ in 0..2 {
                d.value = (d.value << 8) | u32::from(d.next_byte());
            }
            d
        }

        fn next_byte(&mut self) -> u8 {
            let byte = self.data.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
            byte
        }

        fn bool(&mut self, prob: u8) -> bool {
            let split = 1 + (((self.range - 1) * u32::from(prob)) >> 8);
            let big_split = split << 8;
            let bit = if self.value >= big_split {
                self.range -= split;
                self.value -= big_split;
                true
            } else {
                self.range = split;
                false
            };
            while self.range < 128 {
                self.value <<= 1;
                self.range <<= 1;
                self.bit_count += 1;
                if self.bit_count == 8 {
                    self.bit_count = 0;
                    self.value |= u32::from(self.next_byte());
                }
            }
            bit
        }

        fn literal(&mut self, bits: u32) -> u32 {
            (0..bits).fold(0, |acc, _| (acc << 1) | u32::from(self.bool(128)))
        }
    }

    fn partition(frame: &[u8]) -> &[u8] {
        let tag = u32::from_le_bytes([frame[0], frame[1], frame[2], 0]);
        let start = if tag & 1 == 0 { 10 } else { 3 };
        let size = (tag >> 5) as usize;
        assert!(frame.len() > start + size, "a token partition follows the first one");
        &frame[start..start + size]
    }

    fn read_common(d: &mut BoolDecoder<'_>) {
        assert_eq!(d.literal(1), 0, "segmentation_enabled");
        assert_eq!(d.literal(1), 0, "filter_type");
        assert_eq!(d.literal(6), 0, "loop_filter_level");
        assert_eq!(d.literal(3), 0, "sharpness");
        assert_eq!(d.literal(1), 0, "loop_filter_adj_enable");
        assert_eq!(d.literal(2), 0, "partitions");
        assert_eq!(d.literal(7), Q_INDEX, "y_ac_qi");
        for _ in 0..5 {
            assert_eq!(d.literal(1), 0, "quantizer delta flags");
        }
    }

    fn read_no_updates(d: &mut BoolDecoder<'_>) {
        for prob in COEFF_UPDATE_PROBS.iter().flatten().flatten().flatten() {
            assert!(!d.bool(*prob), "no token probability update");
        }
    }

    #[test]
    fn a_key_frame_reads_back_as_written() {
        let frame = key_frame(320, 180);
        assert!(is_key_frame(&frame));
        assert_eq!(u16::from_le_bytes([frame[6], frame[7]]), 320);
        assert_eq!(u16::from_le_bytes([frame[8], frame[9]]), 180);
        let mut d = BoolDecoder::new(partition(&frame));
        assert_eq!(d.literal(2), 0, "color space and clamping");
        read_common(&mut d);
        assert_eq!(d.literal(1), 0, "refresh_entropy_probs");
        read_no_updates(&mut d);
        assert_eq!(d.literal(1), 1, "mb_no_coeff_skip");
        assert_eq!(d.literal(8), u32::from(PROB_SKIP_FALSE));
        for mb in 0..macroblocks(320, 180) {
            assert!(d.bool(PROB_SKIP_FALSE), "macroblock {mb} skipped");
            assert_eq!((d.bool(145), d.bool(156), d.bool(163)), (true, false, false), "DC_PRED");
            assert!(!d.bool(142), "chroma DC_PRED");
        }
    }

    #[test]
    fn a_delta_frame_reads_back_as_written() {
        let frame = delta_frame(320, 180);
        assert!(!is_key_frame(&frame));
        assert_eq!(frame[0] & 1, 1, "an inter frame");
        let mut d = BoolDecoder::new(partition(&frame));
        read_common(&mut d);
        assert_eq!(d.literal(10), 1, "golden/altref untouched, no sign bias, refresh_last");
        read_no_updates(&mut d);
        assert_eq!(d.literal(1), 1, "mb_no_coeff_skip");
        assert_eq!(d.literal(8), u32::from(PROB_SKIP_FALSE));
        assert_eq!(d.literal(8), u32::from(PROB_INTRA));
        assert_eq!((d.literal(8), d.literal(8)), (128, 128));
        assert_eq!(d.literal(2), 0, "no mode probability updates");
        for prob in MV_UPDATE_PROBS.iter().flatten() {
            assert!(!d.bool(*prob), "no motion vector probability update");
        }
        for mb in 0..macroblocks(320, 180) {
            assert!(d.bool(PROB_SKIP_FALSE), "macroblock {mb} skipped");
            assert!(!d.bool(PROB_INTRA), "intra coded");
            assert!(!d.bool(112) && !d.bool(162), "DC_PRED");
        }
    }

    #[test]
    fn frames_stay_small() {
        assert!(key_frame(320, 180).len() < 256, "{}", key_frame(320, 180).len());
        assert!(delta_frame(320, 180).len() < 256, "{}", delta_frame(320, 180).len());
    }
}
