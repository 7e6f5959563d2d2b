//! SplitMix64: the one small seeded generator herd uses wherever it needs
//! repeatable numbers (simulated clusters, synthetic data, benchmark weights,
//! the spot-check sample). Written out here so that generated data never
//! depends on another crate's version, and only once.
//!
//! Pure: no clock, no entropy from the system; the seed decides everything.

use std::ops::Range;

/// SplitMix64 (Steele, Lea and Flood): a 64-bit state moved by a fixed odd
/// step, each output a mix of the state.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Output number `n` (from 0) of the generator seeded with `seed`,
    /// without computing the ones before.
    pub fn nth(seed: u64, n: u64) -> u64 {
        SplitMix64(seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))).next_u64()
    }

    /// Uniform in `range` (empty ranges give `range.start`).
    pub fn in_range(&mut self, range: Range<u64>) -> u64 {
        let width = range.end.saturating_sub(range.start);
        if width == 0 {
            range.start
        } else {
            range.start + self.next_u64() % width
        }
    }

    /// Uniform in [-1, 1), from the top 24 bits of one output.
    pub fn signed_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_matches_the_published_reference_values() {
        // The first outputs for seed 1234567 in the reference implementation.
        let mut r = SplitMix64(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn nth_is_the_stream_output_of_that_number() {
        let mut r = SplitMix64(99);
        for n in 0..10 {
            assert_eq!(SplitMix64::nth(99, n), r.next_u64(), "output {n}");
        }
    }

    #[test]
    fn ranges_and_units_stay_inside_their_bounds() {
        let mut r = SplitMix64(7);
        for _ in 0..1000 {
            assert!((10..20).contains(&r.in_range(10..20)));
            let u = r.signed_unit();
            assert!((-1.0..1.0).contains(&u), "{u}");
        }
        assert_eq!(r.in_range(5..5), 5);
    }
}
