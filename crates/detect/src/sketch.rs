//! Distinct counts beyond the exact bound: HyperLogLog over a sliding window.
//!
//! A distinct counter keeps its values exactly up to a bound (enough for every threshold that
//! reads it). A key that sees more distinct values — a botnet rotating thousands of addresses —
//! switches to this sketch: a ring of HyperLogLogs, one per eighth of the window, merged on read.
//! Memory per key is fixed (8 × 256 one-byte registers); the standard error of a 256-register
//! HyperLogLog is about 6.5 %, which is plenty for counts far above any threshold.

use serde::{Deserialize, Serialize};

/// log2 of the register count.
const P: u32 = 8;
const REGISTERS: usize = 1 << P;
/// Sub-windows per window.
pub const BUCKETS: usize = 8;

/// A HyperLogLog per sub-window of a sliding window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowedSketch {
    /// Sub-window length (ms).
    slot_ms: i64,
    /// For each bucket, the sub-window index it holds (`time / slot_ms`) and its registers.
    slots: Vec<(i64, Vec<u8>)>,
}

/// A 64-bit hash with good low and high bits, deterministic across runs and builds (snapshots
/// depend on it): FNV-1a over the bytes, finished with the SplitMix64 mixer.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl WindowedSketch {
    /// A sketch for a window of `window_ms`.
    pub fn new(window_ms: i64) -> Self {
        WindowedSketch {
            slot_ms: (window_ms / BUCKETS as i64).max(1),
            slots: vec![(i64::MIN, vec![0; REGISTERS]); BUCKETS],
        }
    }

    /// Adds a value (its hash) seen at `time`.
    pub fn insert(&mut self, hash: u64, time: i64) {
        let index = time.div_euclid(self.slot_ms);
        let bucket = index.rem_euclid(BUCKETS as i64) as usize;
        let slot = &mut self.slots[bucket];
        if slot.0 != index {
            if slot.0 > index {
                // Older than what this bucket holds now: outside any window still counted.
                return;
            }
            *slot = (index, vec![0; REGISTERS]);
        }
        let register = (hash >> (64 - P)) as usize;
        // Rank of the first set bit in the remaining bits (1-based).
        let rest = (hash << P) | (1 << (P - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        if slot.1[register] < rank {
            slot.1[register] = rank;
        }
    }

    /// Estimated distinct values seen in `[start, now]` (whole sub-windows: the window is
    /// rounded to the sub-window grid).
    pub fn estimate(&self, start: i64, now: i64) -> u64 {
        let first = start.div_euclid(self.slot_ms);
        let last = now.div_euclid(self.slot_ms);
        let mut merged = [0u8; REGISTERS];
        for (index, registers) in &self.slots {
            if (first..=last).contains(index) {
                for (m, r) in merged.iter_mut().zip(registers) {
                    *m = (*m).max(*r);
                }
            }
        }
        let m = REGISTERS as f64;
        let sum: f64 = merged.iter().map(|r| register_weight(*r)).sum();
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let zeros = merged.iter().filter(|r| **r == 0).count();
        // Small-range correction: linear counting while registers are still empty.
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

/// 2^-r, built from its bits (exponent 1023 - r, mantissa 0): exact, as `powi` is, without a
/// call per register on the detect thread. A register holds at most 64 - P + 1, far from the
/// exponent's limit.
fn register_weight(r: u8) -> f64 {
    f64::from_bits((1023 - u64::from(r)) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_weights_are_exact_powers_of_two() {
        for r in 0..=64u8 {
            assert_eq!(register_weight(r), 2f64.powi(-i32::from(r)));
        }
    }

    #[test]
    fn estimates_within_a_few_percent() {
        for n in [300u64, 2_000, 20_000] {
            let mut s = WindowedSketch::new(600_000);
            for i in 0..n {
                s.insert(
                    hash64(format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255).as_bytes()),
                    1_000,
                );
            }
            let e = s.estimate(0, 1_000) as f64;
            let error = (e - n as f64).abs() / n as f64;
            assert!(error < 0.2, "{n}: estimated {e}");
        }
    }

    #[test]
    fn old_sub_windows_leave_the_window() {
        let mut s = WindowedSketch::new(800_000); // 100 s sub-windows
        for i in 0..1000u64 {
            s.insert(hash64(&i.to_le_bytes()), 50_000);
        }
        for i in 1000..1500u64 {
            s.insert(hash64(&i.to_le_bytes()), 750_000);
        }
        let both = s.estimate(0, 750_000) as f64;
        assert!((1300.0..1700.0).contains(&both), "{both}");
        let recent = s.estimate(700_000, 750_000) as f64;
        assert!((400.0..600.0).contains(&recent), "{recent}");
        // A value far in the future recycles the bucket of the oldest sub-window.
        s.insert(hash64(b"x"), 50_000 + 8 * 100_000);
        assert!(s.estimate(0, 100_000) < 5);
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(hash64(b"203.0.113.9"), hash64(b"203.0.113.9"));
        assert_ne!(hash64(b"a"), hash64(b"b"));
    }
}
