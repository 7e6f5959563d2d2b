//! The JSON of one prediction, written straight from a stored value.
//!
//! `herd store get --json`, `herd serve` and `herd store export --format
//! jsonl` answer with the same bytes. [`Prediction::to_json`] builds that
//! shape as a `serde_json::Value`, which costs an allocation per score; this
//! writer produces the identical text (same key order, same float digits)
//! into a reused buffer, which is what a server answering 100k lookups a
//! second and an export of a million values need. A test holds the two equal.
//!
//! [`Prediction::to_json`]: super::Prediction::to_json

use super::decimal;
use super::value::{ValueKind, ValueRef};

/// An entity id as the JSON `id` field shows it.
#[derive(Clone, Copy, Debug)]
pub enum IdRef<'a> {
    Int(u64),
    /// A string id's bytes (UTF-8 as stored; anything else is shown lossily).
    Str(&'a [u8]),
}

impl IdRef<'_> {
    /// Appends the id as text (no quotes).
    pub fn write_text(&self, out: &mut Vec<u8>) {
        match self {
            IdRef::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            IdRef::Str(s) => out.extend_from_slice(String::from_utf8_lossy(s).as_bytes()),
        }
    }
}

/// Appends `s` as a JSON string literal, escaped as serde_json escapes it.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends `x` as `herd store get --json` shows a score: the shortest decimal
/// that reads back as the same f32, formatted as serde_json formats that
/// decimal's f64; `null` when not finite.
pub fn write_f32(out: &mut Vec<u8>, x: f32) {
    if decimal::write_score(out, x) {
        return;
    }
    if !x.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let a = x.abs();
    // serde_json formats the f64 with zmij. Inside this range zmij writes an
    // f32 and an f64 of the same shortest digits alike (plain, no exponent);
    // outside it take the f64 path. A property test holds this for every f32.
    if a == 0.0 || (1e-5..1e13).contains(&a) {
        out.extend_from_slice(zmij::Buffer::new().format_finite(x).as_bytes());
    } else {
        let _ = serde_json::to_writer(&mut *out, &super::json_f32(x));
    }
}

fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Everything a prediction's JSON holds besides the value itself.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    pub id: IdRef<'a>,
    pub version: u64,
    /// The model version, already a JSON string literal (quoted, escaped):
    /// it is the same for every value of a version, so callers escape it once.
    pub model_version_json: &'a str,
    /// Unix seconds; decides `stale`.
    pub now: u64,
}

/// Appends the `herd store get --json` object of `value`: keys in
/// serde_json's (sorted) order `id, model_version, scores|top_k, stale,
/// timestamp, ttl, version`.
pub fn write_prediction(out: &mut Vec<u8>, f: Fields<'_>, value: ValueRef<'_>) {
    let timestamp = u64::from(value.timestamp());
    let ttl = u64::from(value.ttl());
    let stale = timestamp.saturating_add(ttl) < f.now;
    out.extend_from_slice(b"{\"id\":");
    match f.id {
        IdRef::Int(_) => {
            out.push(b'"');
            f.id.write_text(out);
            out.push(b'"');
        }
        IdRef::Str(s) => write_str(out, &String::from_utf8_lossy(s)),
    }
    out.extend_from_slice(b",\"model_version\":");
    out.extend_from_slice(f.model_version_json.as_bytes());
    let n = value.count();
    match value.kind() {
        ValueKind::Scores => {
            out.extend_from_slice(b",\"scores\":[");
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                write_f32(out, value.score(i));
            }
            out.push(b']');
            write_tail(out, stale, timestamp);
        }
        ValueKind::TopK => {
            write_tail(out, stale, timestamp);
            out.extend_from_slice(b",\"top_k\":[");
            for (i, (item, score)) in value.pairs().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if decimal::write_pair(out, item, score) {
                    continue;
                }
                out.extend_from_slice(b"{\"item\":");
                write_u64(out, u64::from(item));
                out.extend_from_slice(b",\"score\":");
                write_f32(out, score);
                out.push(b'}');
            }
            out.push(b']');
        }
    }
    out.extend_from_slice(b",\"ttl\":");
    write_u64(out, ttl);
    out.extend_from_slice(b",\"version\":");
    write_u64(out, f.version);
    out.push(b'}');
}

fn write_tail(out: &mut Vec<u8>, stale: bool, timestamp: u64) {
    out.extend_from_slice(if stale {
        b",\"stale\":true"
    } else {
        b",\"stale\":false"
    });
    out.extend_from_slice(b",\"timestamp\":");
    write_u64(out, timestamp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::value::{Header, write_header};
    use crate::store::{Prediction, Value};
    use proptest::prelude::*;

    fn encode(kind: ValueKind, pairs: &[(u32, f32)], timestamp: u32, ttl: u32) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(
            &mut out,
            Header {
                kind,
                count: pairs.len() as u16,
                model_ref: 1,
                timestamp,
                ttl,
            },
        );
        for &(item, score) in pairs {
            if kind == ValueKind::TopK {
                out.extend_from_slice(&item.to_le_bytes());
            }
            out.extend_from_slice(&score.to_le_bytes());
        }
        out
    }

    /// The writer's text for `bytes`, and `Prediction::to_json`'s.
    fn both(id: IdRef<'_>, model: &str, bytes: &[u8], now: u64) -> (String, String) {
        let value = ValueRef::parse(bytes).unwrap();
        let mut model_json = Vec::new();
        write_str(&mut model_json, model);
        let model_json = String::from_utf8(model_json).unwrap();
        let mut out = Vec::new();
        write_prediction(
            &mut out,
            Fields {
                id,
                version: 7,
                model_version_json: &model_json,
                now,
            },
            value,
        );
        let mut text = Vec::new();
        id.write_text(&mut text);
        let p = Prediction {
            id: String::from_utf8(text).unwrap(),
            version: 7,
            model_version: model.to_string(),
            timestamp: u64::from(value.timestamp()),
            ttl: u64::from(value.ttl()),
            stale: u64::from(value.timestamp()) + u64::from(value.ttl()) < now,
            value: value.to_value(),
        };
        (
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&p.to_json()).unwrap(),
        )
    }

    #[test]
    fn top_k_and_scores_match_store_get_json_byte_for_byte() {
        let pairs = [(17, 3.21), (4, -0.5), (9, 1e-7), (2, 3e20), (1, 0.0)];
        let bytes = encode(ValueKind::TopK, &pairs, 100, 50);
        let (fast, slow) = both(IdRef::Int(42), "tt-\"1\"\n", &bytes, 120);
        assert_eq!(fast, slow);
        assert!(fast.contains("\"stale\":false"), "{fast}");
        let bytes = encode(ValueKind::Scores, &pairs, 100, 50);
        let (fast, slow) = both(IdRef::Str("user/é".as_bytes()), "m", &bytes, 151);
        assert_eq!(fast, slow);
        assert!(fast.contains("\"stale\":true"), "{fast}");
    }

    #[test]
    fn non_finite_scores_are_null_as_in_store_get() {
        let pairs = [(1, f32::NAN), (2, f32::INFINITY), (3, -0.0)];
        let bytes = encode(ValueKind::TopK, &pairs, 0, 0);
        let (fast, slow) = both(IdRef::Int(0), "m", &bytes, 0);
        assert_eq!(fast, slow);
        assert!(fast.contains("null"));
    }

    #[test]
    fn an_empty_value_is_an_empty_list() {
        let bytes = encode(ValueKind::Scores, &[], 0, 0);
        let (fast, slow) = both(IdRef::Int(1), "m", &bytes, 0);
        assert_eq!(fast, slow);
        assert!(matches!(
            ValueRef::parse(&bytes).unwrap().to_value(),
            Value::Scores(v) if v.is_empty()
        ));
    }

    #[test]
    fn scores_print_as_serde_json_prints_them_across_the_f32_range() {
        // Every 2003rd bit pattern: all exponents, signs and many mantissas.
        let mut fast = Vec::new();
        for bits in (0..=u32::MAX).step_by(2003) {
            let x = f32::from_bits(bits);
            fast.clear();
            write_f32(&mut fast, x);
            let slow = serde_json::to_string(&crate::store::json_f32(x)).unwrap();
            assert_eq!(std::str::from_utf8(&fast).unwrap(), slow, "bits {bits:#x}");
        }
    }

    proptest! {
        #[test]
        fn every_f32_prints_as_store_get_prints_it(bits in any::<u32>(), item in any::<u32>()) {
            let x = f32::from_bits(bits);
            let bytes = encode(ValueKind::TopK, &[(item, x), (item ^ 1, x / 3.0)], 5, 5);
            let (fast, slow) = both(IdRef::Int(u64::from(bits)), "m", &bytes, 0);
            prop_assert_eq!(fast, slow);
        }
    }
}
