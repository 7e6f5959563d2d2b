//! Fast decimal text of the numbers in a prediction's JSON: scores (f32) of
//! ordinary size and item ids.
//!
//! A top-100 answer is 100 (item, score) pairs, so formatting is most of
//! what `herd serve` spends on a GET. [`super::json::write_f32`] formats a
//! score as zmij's shortest decimal; for scores with |x| in [1e-5, 2^23)
//! that are not powers of two (nearly every score a model produces) this
//! module finds the same digits with integer arithmetic that is exact in that
//! range, and writes them without the general formatter's detours. Anything
//! else (powers of two, tiny or huge values, zero, non-finite) returns `None`
//! and takes the general path. Tests hold the two byte-identical: sampled
//! across the whole f32 range in every run, and on every one of the 666
//! million f32 values this path takes in an ignored test.
//!
//! The digits: a value x = c * 2^q (c the 24-bit significand, q in -40..=-1)
//! reads back from every decimal inside its rounding interval, x -/+ 2^q / 2,
//! bounds included when c is even. Scaled by 10^k, with k chosen so that the
//! interval is between 1 and 10 units wide, the shortest decimal is the one
//! multiple of 10 inside the interval if there is one, else the nearer of
//! floor(x * 10^k) and the next integer (ties to even). Both the scaled value
//! and the bounds are numerators over 2^(1-q), so every comparison is exact.

/// Binary exponents (of the 24-bit significand) the fast path takes: the
/// values below 2^23, down to those near 1e-5.
const Q_MIN: i32 = -40;
const Q_MAX: i32 = -1;

/// For q = -1 down to Q_MIN: (k, 10^k) with 1 <= 10^k / 2^-q < 10.
const SCALES: [(i32, u64); 40] = {
    let mut t = [(0i32, 0u64); 40];
    let mut i = 0;
    while i < t.len() {
        let (mut k, mut p) = (0, 1u64);
        while (p as u128) < (1u128 << (i + 1)) {
            p *= 10;
            k += 1;
        }
        t[i] = (k, p);
        i += 1;
    }
    t
};

/// The shortest decimal in the rounding interval, for one integer width:
/// `u64` while 2c * 10^k fits (k <= 11), `u128` beyond. Branch-free, as the
/// choices depend on the digits.
macro_rules! shortest_in {
    ($t:ty, $c:expr, $shift:expr, $p:expr, $k:expr) => {{
        let c: u64 = $c;
        let shift: u32 = $shift;
        let p = <$t>::from($p);
        // x * 10^k and its interval, as numerators over 2^shift.
        let v = <$t>::from(2 * c) * p;
        let open = <$t>::from(c & 1);
        let lo = v - p + open;
        let hi = v + p - open;
        let s = (v >> shift) as u64;
        let tens = s / 10;
        let low_ten = (<$t>::from(tens * 10) << shift) >= lo;
        let high_ten = (<$t>::from(tens * 10 + 10) << shift) <= hi;
        let low = (<$t>::from(s) << shift) >= lo;
        let high = (<$t>::from(s + 1) << shift) <= hi;
        let rest = v & ((<$t>::from(1u8) << shift) - 1);
        let half = <$t>::from(1u8) << (shift - 1);
        let round_up = (rest > half) | ((rest == half) & (s & 1 == 1));
        let nearer = s + u64::from(if low != high { high } else { round_up });
        let shorter = low_ten != high_ten;
        let digits = if shorter {
            tens + u64::from(high_ten)
        } else {
            nearer
        };
        (digits, i32::from(shorter) - $k)
    }};
}

/// The shortest decimal `digits * 10^exp` (no trailing zeros in `digits`,
/// which is below 10^9) that reads back as `x`, for |x| in [1e-5, 2^23) and
/// not a power of two; `None` for any other value.
#[inline]
pub(crate) fn shortest(x: f32) -> Option<(u32, i32)> {
    let bits = x.to_bits();
    let q = ((bits >> 23) & 0xff) as i32 - 150;
    let fraction = bits & 0x7f_ffff;
    if !(Q_MIN..=Q_MAX).contains(&q) || fraction == 0 || x.abs() < 1e-5 {
        return None;
    }
    let c = u64::from(fraction | 0x80_0000);
    let shift = q.unsigned_abs() + 1;
    let (k, p) = SCALES[(q.unsigned_abs() - 1) as usize];
    let (mut digits, mut exp) = if k <= 11 {
        shortest_in!(u64, c, shift, p, k)
    } else {
        shortest_in!(u128, c, shift, p, k)
    };
    while digits % 10 == 0 {
        digits /= 10;
        exp += 1;
    }
    // x < 2^24 * 10^k / 2^-q < 1.7e8.
    Some((digits as u32, exp))
}

/// Decimal digits of `n` (1 for 0).
#[inline]
fn count_digits(n: u32) -> usize {
    n.checked_ilog10().unwrap_or(0) as usize + 1
}

/// The 8 decimal digits of `n` < 10^8, zero-padded, as values 0..=9 in
/// bytes 0 (the most significant) to 7: four lanes of two digits each,
/// split in parallel.
#[inline]
fn digits8(n: u32) -> u64 {
    let halves = u64::from(n / 10_000) | (u64::from(n % 10_000) << 32);
    // x * 10486 >> 20 is x / 100 for x < 10^4; x * 103 >> 10 is x / 10 for
    // x < 100.
    let hundreds = ((halves * 10_486) >> 20) & 0x0000_007f_0000_007f;
    let pairs = hundreds | ((halves - hundreds * 100) << 16);
    let tens = ((pairs * 103) >> 10) & 0x000f_000f_000f_000f;
    tens | ((pairs - tens * 10) << 8)
}

const ZEROS_64: u64 = u64::from_le_bytes([b'0'; 8]);
const ZEROS_128: u128 = u128::from_le_bytes([b'0'; 16]);

/// Bytes [`plain_at`] may touch past `at`.
const PLAIN_ROOM: usize = 40;

/// Writes `digits * 10^exp` (`digits` < 10^9, decimal exponent of its first
/// digit in -5..=12) as zmij writes an f32 in its fixed range: `0.00123`,
/// `12.5`, `1200.0`, at `text[at..]`, which holds [`PLAIN_ROOM`] bytes of
/// b'0'. Returns where the text ends.
#[inline]
fn plain_at(text: &mut [u8], at: usize, negative: bool, digits: u32, exp: i32) -> usize {
    let n = count_digits(digits);
    let first = exp + n as i32 - 1;
    // The significant digits as text in bytes 0..n, b'0' after.
    let all9 = u128::from(digits8(digits % 100_000_000)) << 8 | u128::from(digits / 100_000_000);
    let sig = (all9 >> (8 * (9 - n))) + ZEROS_128;
    text[at] = b'-';
    let at = at + usize::from(negative);
    if first < 0 {
        // 0.000ddd
        text[at] = b'0';
        text[at + 1] = b'.';
        let start = at + 1 + first.unsigned_abs() as usize;
        text[start..start + 16].copy_from_slice(&sig.to_le_bytes());
        return start + n;
    }
    let dot = at + first as usize + 1;
    text[at..at + 16].copy_from_slice(&sig.to_le_bytes());
    if n <= first as usize + 1 {
        // ddd00.0
        text[dot] = b'.';
        text[dot + 1] = b'0';
        dot + 2
    } else {
        // dd.ddd
        let tail = sig >> (8 * (first as u32 + 1));
        text[dot + 1..dot + 17].copy_from_slice(&tail.to_le_bytes());
        text[dot] = b'.';
        at + n + 1
    }
}

/// Appends `x`'s JSON text when [`shortest`] takes it; `false` (nothing
/// written) otherwise.
#[inline]
pub(crate) fn write_score(out: &mut Vec<u8>, x: f32) -> bool {
    let Some((digits, exp)) = shortest(x) else {
        return false;
    };
    // The room is written whole and cut back: stores go straight to the
    // buffer, never through a copy.
    let start = out.len();
    out.extend_from_slice(&[b'0'; PLAIN_ROOM]);
    let end = plain_at(&mut out[start..], 0, x < 0.0, digits, exp);
    out.truncate(start + end);
    true
}

/// Appends `{"item":ITEM,"score":SCORE}` when `item` < 10^8 and
/// [`shortest`] takes `score`; `false` (nothing written) otherwise.
#[inline]
pub(crate) fn write_pair(out: &mut Vec<u8>, item: u32, score: f32) -> bool {
    const ROOM: usize = 8 + 8 + 9 + PLAIN_ROOM + 1;
    let Some((digits, exp)) = shortest(score) else {
        return false;
    };
    if item >= 100_000_000 {
        return false;
    }
    let start = out.len();
    out.extend_from_slice(&[b'0'; ROOM]);
    let text = &mut out[start..];
    text[..8].copy_from_slice(b"{\"item\":");
    let n = count_digits(item);
    let item_text = (digits8(item) >> (8 * (8 - n))) + ZEROS_64;
    text[8..16].copy_from_slice(&item_text.to_le_bytes());
    let at = 8 + n;
    text[at..at + 9].copy_from_slice(b",\"score\":");
    let end = plain_at(text, at + 9, score < 0.0, digits, exp);
    text[end] = b'}';
    out.truncate(start + end + 1);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// zmij's text of `x`, as `herd store get --json` has always shown it.
    fn zmij(x: f32) -> String {
        zmij::Buffer::new().format_finite(x).to_string()
    }

    fn fast(x: f32) -> Option<String> {
        let mut out = Vec::new();
        write_score(&mut out, x).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn scores_read_as_zmij_writes_them() {
        let cases = [
            1.384_869_6f32,
            0.5,
            -0.123_456_79,
            1e-5,
            1.000_000_1e-5,
            0.1,
            0.3,
            3.21,
            123_456.79,
            8_388_607.5,
            1.5,
            100.5,
            7.006_492e-6,
            f32::from_bits(0x3727_c5ad),
        ];
        for x in cases {
            if let Some(text) = fast(x) {
                assert_eq!(text, zmij(x), "{x:e} ({:#x})", x.to_bits());
            }
        }
        // Every 1009th bit pattern of the fast range's exponents.
        let (lo, hi) = ((127 - 17) << 23, (127 + 23) << 23);
        for bits in (lo..hi).step_by(1009) {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                if let Some(text) = fast(x) {
                    assert_eq!(text, zmij(x), "{:#x}", x.to_bits());
                }
            }
        }
    }

    #[test]
    fn other_values_take_the_general_path() {
        for x in [
            0.0f32,
            -0.0,
            1.0,
            2.0,
            0.25,
            8_388_608.0,
            1e7,
            9.99e-6,
            f32::MIN_POSITIVE,
            f32::NAN,
            f32::INFINITY,
        ] {
            assert!(shortest(x).is_none(), "{x:e}");
        }
        assert!(shortest(8_388_607.5).is_some());
        assert!(shortest(1.5).is_some());
    }

    #[test]
    fn pairs_read_as_the_general_writer_writes_them() {
        for item in [0u32, 7, 10, 99, 100, 4_321, 99_999_999] {
            for score in [1.384_869_6f32, -0.75, 123.25, 1.5e-5] {
                let mut out = Vec::new();
                assert!(write_pair(&mut out, item, score));
                let want = format!("{{\"item\":{item},\"score\":{}}}", zmij(score));
                assert_eq!(String::from_utf8(out).unwrap(), want);
            }
        }
        let mut out = Vec::new();
        assert!(!write_pair(&mut out, 100_000_000, 1.5));
        assert!(!write_pair(&mut out, 1, 1.0));
        assert!(out.is_empty());
    }

    #[test]
    fn digits8_splits_every_lane() {
        for n in (0..100_000_000u32)
            .step_by(9_973)
            .chain([0, 9, 10, 99, 100, 9_999, 10_000, 99_999_999])
        {
            let want: Vec<u8> = format!("{n:08}").bytes().map(|b| b - b'0').collect();
            assert_eq!(digits8(n).to_le_bytes().to_vec(), want, "{n}");
        }
    }

    /// Every f32 the fast path takes (about 666 million, both signs):
    /// `cargo test --release --lib store::decimal -- --ignored` (a minute).
    #[test]
    #[ignore = "exhaustive: about a minute in a release build"]
    fn every_fast_path_value_reads_as_zmij_writes_it() {
        let mut out = Vec::new();
        let mut taken = 0u64;
        for bits in 0..=u32::MAX {
            let x = f32::from_bits(bits);
            out.clear();
            if !write_score(&mut out, x) {
                continue;
            }
            taken += 1;
            let mut buf = zmij::Buffer::new();
            assert_eq!(out, buf.format_finite(x).as_bytes(), "{bits:#x}");
        }
        assert!(taken > 600_000_000, "{taken}");
    }
}
