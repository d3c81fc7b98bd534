//! JSON text 64 bytes at a time, for reading strings (json_value.rs `pass_blocks`): where a block's
//! quotes, backslashes and control characters are, one bit a byte, and which of its bytes a
//! backslash escapes. A payload kept as JSON text in a record has an escaped quote every few bytes,
//! so a scan that stops at each one spends most of its time stopping; a block's bits answer for all
//! of them at once.

/// Bytes in a block: bit k of each mask stands for byte k.
pub(crate) const BLOCK: usize = 64;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Masks {
    pub quotes: u64,
    pub backslashes: u64,
    /// Bytes below 0x20, which a JSON string may not hold as they are.
    pub controls: u64,
}

/// The masks of `block`, sixteen bytes an instruction (SSE2, which every x86-64 processor has;
/// safe_arch exposes it without unsafe code of ours).
#[cfg(target_arch = "x86_64")]
pub(crate) fn masks(block: &[u8; BLOCK]) -> Masks {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, m128i, min_u8_m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };
    let quote = set_splat_i8_m128i(b'"' as i8);
    let backslash = set_splat_i8_m128i(b'\\' as i8);
    let last_control = set_splat_i8_m128i(0x1f);
    let mut masks = Masks::default();
    for (k, chunk) in block.chunks_exact(16).enumerate() {
        let bytes = m128i::from(<[u8; 16]>::try_from(chunk).expect("sixteen bytes"));
        // the high bit of each byte of a comparison, sixteen bits, put in place
        let bits = |equal: m128i| u64::from(move_mask_i8_m128i(equal) as u16) << (16 * k);
        masks.quotes |= bits(cmp_eq_mask_i8_m128i(bytes, quote));
        masks.backslashes |= bits(cmp_eq_mask_i8_m128i(bytes, backslash));
        // a byte is at most 0x1f when the smaller of it and 0x1f (unsigned) is the byte itself
        masks.controls |= bits(cmp_eq_mask_i8_m128i(
            min_u8_m128i(bytes, last_control),
            bytes,
        ));
    }
    masks
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) use masks_by_bytes as masks;

/// The masks of `block` a byte at a time (elsewhere than x86-64, and the tests' reference).
#[cfg(any(test, not(target_arch = "x86_64")))]
pub(crate) fn masks_by_bytes(block: &[u8; BLOCK]) -> Masks {
    let mut masks = Masks::default();
    for (k, &byte) in block.iter().enumerate() {
        masks.quotes |= u64::from(byte == b'"') << k;
        masks.backslashes |= u64::from(byte == b'\\') << k;
        masks.controls |= u64::from(byte < 0x20) << k;
    }
    masks
}

/// The bytes of a block that a backslash escapes, from its `backslashes` and `carry`: 1 when the
/// block's first byte is escaped by the block before it (a run of backslashes of odd length ended
/// it), 0 when not; `carry` is then set for the next block.
///
/// A run of n backslashes starting at byte s escapes bytes s+1, s+3, … up to s+n: the bytes after
/// a backslash whose distance from the run's start is odd. So after a run starting at an even byte
/// the odd bytes are escaped, after one starting at an odd byte the even bytes.
pub(crate) fn escaped(backslashes: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555; // bits 0, 2, 4, …
    let backslashes = backslashes & !*carry; // an escaped backslash starts nothing
    let after = backslashes << 1 | *carry;
    let odd_starts = backslashes & !EVEN & !after;
    // Adding each odd-starting run's first bit to the runs clears that run and sets the bit just
    // past it (a byte that is no backslash, so no other run's); the even-starting runs stay. A run
    // that reaches the block's end from an odd start has an odd length: its carry out of the top
    // bit is the next block's escaped first byte.
    let (even_runs, carried) = backslashes.overflowing_add(odd_starts);
    *carry = u64::from(carried);
    // Each even-starting run, moved one byte on, covers exactly the bytes after it, whose parity
    // it flips; the set bits past the odd-starting runs move onto bytes after no backslash.
    (EVEN ^ even_runs << 1) & after
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The escaped bytes of `text` read from its start a byte at a time.
    fn escaped_by_bytes(text: &[u8]) -> Vec<bool> {
        let mut escaped = vec![false; text.len()];
        let mut at = 0;
        while at < text.len() {
            if text[at] == b'\\' && at + 1 < text.len() {
                escaped[at + 1] = true;
                at += 2;
            } else {
                at += 1;
            }
        }
        escaped
    }

    #[test]
    fn blocks_find_what_a_byte_reader_finds() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let bytes = [
            b'\\', b'\\', b'\\', b'"', b'a', 0x1f, 0x20, 0, 0x7f, 0x80, 0xff, b'n',
        ];
        for round in 0..50_000 {
            let len = BLOCK * (1 + round % 3);
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    bytes[(state % bytes.len() as u64) as usize]
                })
                .collect();
            let expected = escaped_by_bytes(&text);
            let mut carry = 0;
            for (b, block) in text.chunks_exact(BLOCK).enumerate() {
                let block: &[u8; BLOCK] = block.try_into().unwrap();
                let found = masks(block);
                assert_eq!(found, masks_by_bytes(block));
                let bits = escaped(found.backslashes, &mut carry);
                for k in 0..BLOCK {
                    assert_eq!(
                        bits >> k & 1 == 1,
                        expected[b * BLOCK + k],
                        "{text:?} at {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn runs_of_backslashes_across_blocks() {
        for start in 0..2 * BLOCK {
            for run in 1..=2 * BLOCK + 2 {
                let mut text = vec![b'a'; start];
                text.extend(std::iter::repeat_n(b'\\', run));
                text.push(b'"');
                text.resize(text.len().next_multiple_of(BLOCK), b'a');
                let expected = escaped_by_bytes(&text);
                let mut carry = 0;
                for (b, block) in text.chunks_exact(BLOCK).enumerate() {
                    let bits = escaped(masks(block.try_into().unwrap()).backslashes, &mut carry);
                    for k in 0..BLOCK {
                        assert_eq!(
                            bits >> k & 1 == 1,
                            expected[b * BLOCK + k],
                            "{start} {run} {k}"
                        );
                    }
                }
            }
        }
    }
}
