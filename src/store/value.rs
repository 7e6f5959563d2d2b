//! The byte layout of one stored prediction and a view that decodes it in place.
//!
//! A value is a 16-byte header then the payload, little endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0 | `format` = 1 |
//! | 1 | `kind`: 0 scores, 1 top-K |
//! | 2..4 | `count` (u16): scores, or (item, score) pairs |
//! | 4..8 | `model_ref` (u32): the version whose record names the model version |
//! | 8..12 | `timestamp` (u32, unix seconds) |
//! | 12..16 | `ttl` (u32, seconds) |
//!
//! then `count` f32 scores, or `count` (u32 item, f32 score) pairs. A top-100
//! value is 816 bytes. Nothing here assumes alignment: string keys shift the
//! value's address inside an LMDB page.

use serde::{Deserialize, Serialize};

/// The only value format this build writes and reads.
pub const FORMAT: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;
/// The most scores or (item, score) pairs one value holds (`count` is a u16).
pub const MAX_COUNT: usize = u16::MAX as usize;
// A model refuses at load to give more scores than a value holds.
const _: () = assert!(crate::model::MAX_SCORES == MAX_COUNT);

const KIND_SCORES: u8 = 0;
const KIND_TOP_K: u8 = 1;

/// An owned prediction payload, for JSON output and validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// Scores of a scoring model (mlp), in output order.
    Scores(Vec<f32>),
    /// (item id, score) pairs of a candidate model (two_tower), best first.
    TopK(Vec<(u32, f32)>),
}

impl Value {
    /// Number of scores or pairs.
    pub fn len(&self) -> usize {
        match self {
            Value::Scores(s) => s.len(),
            Value::TopK(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a value's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Scores,
    TopK,
}

/// The per-value header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: ValueKind,
    pub count: u16,
    pub model_ref: u32,
    pub timestamp: u32,
    pub ttl: u32,
}

/// Appends the header of a value to `out`.
pub(crate) fn write_header(out: &mut Vec<u8>, h: Header) {
    out.push(FORMAT);
    out.push(match h.kind {
        ValueKind::Scores => KIND_SCORES,
        ValueKind::TopK => KIND_TOP_K,
    });
    out.extend_from_slice(&h.count.to_le_bytes());
    out.extend_from_slice(&h.model_ref.to_le_bytes());
    out.extend_from_slice(&h.timestamp.to_le_bytes());
    out.extend_from_slice(&h.ttl.to_le_bytes());
}

/// A stored value, decoded on access. Borrowed from the read transaction that
/// produced it: no copy is made.
#[derive(Clone, Copy, Debug)]
pub struct ValueRef<'a> {
    bytes: &'a [u8],
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

impl<'a> ValueRef<'a> {
    /// Checks the header and the length, then wraps the bytes. The error says
    /// what is wrong with them.
    pub fn parse(bytes: &'a [u8]) -> std::result::Result<ValueRef<'a>, String> {
        if bytes.len() < HEADER_LEN {
            return Err(format!(
                "value is {} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            ));
        }
        if bytes[0] != FORMAT {
            return Err(format!(
                "value format {} is not the supported format {FORMAT}",
                bytes[0]
            ));
        }
        let pair = match bytes[1] {
            KIND_SCORES => 4,
            KIND_TOP_K => 8,
            k => {
                return Err(format!(
                    "value kind {k} is neither 0 (scores) nor 1 (top-K)"
                ));
            }
        };
        let count = u16::from_le_bytes([bytes[2], bytes[3]]) as usize;
        let want = HEADER_LEN + count * pair;
        if bytes.len() != want {
            return Err(format!(
                "value is {} bytes, its header (count {count}) says {want}",
                bytes.len()
            ));
        }
        Ok(ValueRef { bytes })
    }

    /// The raw bytes, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn kind(&self) -> ValueKind {
        if self.bytes[1] == KIND_TOP_K {
            ValueKind::TopK
        } else {
            ValueKind::Scores
        }
    }

    /// Number of scores or (item, score) pairs.
    pub fn count(&self) -> usize {
        u16::from_le_bytes([self.bytes[2], self.bytes[3]]) as usize
    }

    pub fn model_ref(&self) -> u32 {
        le_u32(self.bytes, 4)
    }

    pub fn timestamp(&self) -> u32 {
        le_u32(self.bytes, 8)
    }

    pub fn ttl(&self) -> u32 {
        le_u32(self.bytes, 12)
    }

    /// Score `i`: the i-th score, or the score of the i-th pair.
    pub fn score(&self, i: usize) -> f32 {
        match self.kind() {
            ValueKind::Scores => f32::from_bits(le_u32(self.bytes, HEADER_LEN + 4 * i)),
            ValueKind::TopK => f32::from_bits(le_u32(self.bytes, HEADER_LEN + 8 * i + 4)),
        }
    }

    /// Item of pair `i`; `None` for a scores value.
    pub fn item(&self, i: usize) -> Option<u32> {
        match self.kind() {
            ValueKind::Scores => None,
            ValueKind::TopK => Some(le_u32(self.bytes, HEADER_LEN + 8 * i)),
        }
    }

    /// Every score, in stored order.
    pub fn scores(&self) -> impl Iterator<Item = f32> + '_ {
        (0..self.count()).map(|i| self.score(i))
    }

    /// Every (item, score) pair; empty for a scores value.
    pub fn pairs(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        let n = if self.kind() == ValueKind::TopK {
            self.count()
        } else {
            0
        };
        (0..n).map(|i| (le_u32(self.bytes, HEADER_LEN + 8 * i), self.score(i)))
    }

    /// An owned copy of the payload.
    pub fn to_value(&self) -> Value {
        match self.kind() {
            ValueKind::Scores => Value::Scores(self.scores().collect()),
            ValueKind::TopK => Value::TopK(self.pairs().collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(h: Header, payload: &[(u32, f32)]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, h);
        for &(item, score) in payload {
            if h.kind == ValueKind::TopK {
                out.extend_from_slice(&item.to_le_bytes());
            }
            out.extend_from_slice(&score.to_le_bytes());
        }
        out
    }

    #[test]
    fn top_100_value_is_816_bytes_and_round_trips() {
        let pairs: Vec<(u32, f32)> = (0..100).map(|i| (i * 7, 100.0 - i as f32)).collect();
        let h = Header {
            kind: ValueKind::TopK,
            count: 100,
            model_ref: 3,
            timestamp: 1_764_388_800,
            ttl: 604_800,
        };
        let bytes = encode(h, &pairs);
        assert_eq!(bytes.len(), 816);
        let v = ValueRef::parse(&bytes).unwrap();
        assert_eq!(v.model_ref(), 3);
        assert_eq!(v.timestamp(), 1_764_388_800);
        assert_eq!(v.ttl(), 604_800);
        assert_eq!(v.to_value(), Value::TopK(pairs));
    }

    #[test]
    fn unaligned_value_decodes() {
        let h = Header {
            kind: ValueKind::Scores,
            count: 2,
            model_ref: 1,
            timestamp: 5,
            ttl: 6,
        };
        let mut bytes = vec![0u8];
        bytes.extend(encode(h, &[(0, 0.25), (0, -1.5)]));
        let v = ValueRef::parse(&bytes[1..]).unwrap();
        assert_eq!(v.to_value(), Value::Scores(vec![0.25, -1.5]));
        assert_eq!(v.item(0), None);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_refused_with_reason() {
        let h = Header {
            kind: ValueKind::TopK,
            count: 2,
            model_ref: 1,
            timestamp: 0,
            ttl: 0,
        };
        let bytes = encode(h, &[(1, 1.0), (2, 0.5)]);
        let err = ValueRef::parse(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("count 2"), "{err}");
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(ValueRef::parse(&other).unwrap_err().contains("format 9"));
        assert!(ValueRef::parse(&[1, 0]).unwrap_err().contains("header"));
    }
}
