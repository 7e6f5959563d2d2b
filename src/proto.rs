//! The coordinator <-> worker protocol: messages, framing, the version
//! handshake and the size limit on every frame.
//!
//! Frames are a 4-byte little-endian length followed by a postcard-encoded
//! message. The worker speaks first (`FromWorker::Hello`); the coordinator
//! refuses a worker whose protocol version differs. Pure: this room encodes
//! and decodes bytes; reading and writing pipes is the transports' job.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{Device, Input};
use crate::data::Segment;
use crate::model::{ModelSpec, Predictions, Rows};
use crate::sched::{AttemptId, ChunkId};

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 5;

/// The largest frame either side accepts: 512 MiB. A chunk's rows or
/// predictions beyond this are a planning error (chunks are sized by cost
/// far below it), so a larger length means a corrupt or foreign stream.
pub const MAX_FRAME_BYTES: usize = 512 << 20;

/// Bytes of the length prefix.
pub const HEADER_BYTES: usize = 4;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "frame of {len} bytes is over the {max}-byte limit (corrupt stream, or not a herd worker)"
    )]
    TooLarge { len: usize, max: usize },
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("cannot decode message: {0}")]
    Decode(String),
}

/// Coordinator -> worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Load the model once; `path` names the weights on the worker's machine,
    /// checked against `sha256` before use.
    Load {
        spec: ModelSpec,
        sha256: String,
        path: String,
        num_features: usize,
        device: Device,
        /// CPU threads for the native path.
        threads: u32,
        /// The job's input, for a worker that reads its own rows
        /// ([`ChunkRows::Read`]); `None`: every chunk comes with its rows.
        input: Option<Box<Input>>,
        /// Whether the model reads the input's history column.
        needs_history: bool,
    },
    /// Report which backend `device` gives on this machine, without a model
    /// (`herd hosts check`); answered with `Loaded` (model empty).
    Probe { device: Device, threads: u32 },
    /// Score `rows` as attempt `attempt` of chunk `chunk`.
    Run {
        chunk: ChunkId,
        attempt: AttemptId,
        rows: ChunkRows,
    },
    /// A hint: the rows (as a [`ChunkRows::Read`] gives them) of the `Run`
    /// this worker will likely get next. It reads them ahead while it
    /// scores; a `Run` for other rows drops what it read, and a later
    /// `Prefetch` replaces this one.
    Prefetch { segments: Vec<Segment> },
    /// The chunk was split: only the first `rows` rows of the attempt matter.
    StopAt { attempt: AttemptId, rows: u64 },
    /// Drop the attempt.
    Cancel { attempt: AttemptId },
    /// Exit cleanly.
    Shutdown,
}

/// A chunk's rows: carried in the message, or described for the worker to
/// read itself from the input it was given at `Load`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ChunkRows {
    Rows(Rows),
    /// The rows, in order, one segment per part file they touch; the worker
    /// checks each (part row count, first and last id) and fails the
    /// attempt naming the file when it differs.
    Read(Vec<Segment>),
}

impl ChunkRows {
    /// How many rows the attempt covers.
    pub fn len(&self) -> usize {
        match self {
            ChunkRows::Rows(rows) => rows.len(),
            ChunkRows::Read(segments) => segments
                .iter()
                .map(|s| (s.rows.end - s.rows.start) as usize)
                .sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Worker -> coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    Hello {
        version: u32,
        host: String,
        pid: u32,
    },
    /// The model is loaded on the chosen backend.
    Loaded {
        backend: String,
        adapter: String,
        model: String,
    },
    Progress {
        attempt: AttemptId,
        rows_done: u64,
    },
    /// Predictions for the first `predictions.len()` rows of the attempt.
    Result {
        attempt: AttemptId,
        predictions: Predictions,
        /// Bytes of input rows this worker read itself for the attempt
        /// ([`Rows::byte_size`]); 0 when the rows came in the message.
        input_bytes: u64,
        /// Whether the worker had begun reading them on a `Prefetch`
        /// before the attempt's `Run` came.
        read_ahead: bool,
        /// The worker process's peak resident memory so far (0 where the
        /// system does not say).
        peak_rss_bytes: u64,
    },
    /// The attempt's row `row` (counted from its first row) holds a null,
    /// NaN or infinite feature, found reading rows the worker read itself
    /// under `[input] on_invalid = "error"`; the attempt is over. The
    /// coordinator reads that row itself before it believes it.
    InvalidInput {
        attempt: AttemptId,
        row: u64,
    },
    /// `attempt: None`: the worker cannot go on (bad model, no device).
    Error {
        attempt: Option<AttemptId>,
        message: String,
    },
}

/// Encodes `msg` as one frame: length prefix then body.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
    let mut frame = vec![0u8; HEADER_BYTES];
    let mut frame = postcard::to_extend(msg, std::mem::take(&mut frame))
        .map_err(|e| Error::Encode(e.to_string()))?;
    let len = frame.len() - HEADER_BYTES;
    if len > MAX_FRAME_BYTES {
        return Err(Error::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    frame[..HEADER_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(frame)
}

/// The body length a frame header announces, checked against the limit.
pub fn body_len(header: [u8; HEADER_BYTES]) -> Result<usize> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(Error::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    Ok(len)
}

/// Decodes a frame body (without its header).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    postcard::from_bytes(body).map_err(|e| Error::Decode(e.to_string()))
}

/// Checks the worker's hello: the protocol versions must match.
pub fn check_hello(msg: &FromWorker) -> std::result::Result<(), String> {
    match msg {
        FromWorker::Hello { version, .. } if *version == PROTOCOL_VERSION => Ok(()),
        FromWorker::Hello { version, host, .. } => Err(format!(
            "worker on '{host}' speaks protocol {version}, this herd speaks {PROTOCOL_VERSION}: ship the matching binary (remove worker_binary or rebuild it)"
        )),
        other => Err(format!(
            "worker did not start with a hello (sent {other:?})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EntityIds;

    fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
        let frame = encode(&msg).unwrap();
        let len = body_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        let back: T = decode(&frame[4..]).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn messages_survive_a_round_trip() {
        roundtrip(ToWorker::Run {
            chunk: 3,
            attempt: 9,
            rows: ChunkRows::Rows(Rows {
                ids: EntityIds::Str(vec!["a".into(), "b".into()]),
                num_features: 1,
                features: vec![0.5, -1.0],
                history_offsets: vec![0, 2, 2],
                history_items: vec![7, 8],
            }),
        });
        roundtrip(ToWorker::Run {
            chunk: 3,
            attempt: 10,
            rows: ChunkRows::Read(vec![Segment {
                part: "s3://b/users/part-1.parquet".into(),
                part_rows: 1_000,
                identity: "8192 \"9b2cf535f27731c974343645a3985328\" 1764460800000000000".into(),
                rows: 10..20,
                first_id: crate::model::EntityKey::Int(42),
                last_id: crate::model::EntityKey::Int(51),
            }]),
        });
        roundtrip(ToWorker::Prefetch {
            segments: vec![Segment {
                part: "users/part-0.parquet".into(),
                part_rows: 64,
                identity: "4096 1764460800000000000".into(),
                rows: 0..64,
                first_id: crate::model::EntityKey::Str("a".into()),
                last_id: crate::model::EntityKey::Str("z".into()),
            }],
        });
        roundtrip(FromWorker::Result {
            attempt: 9,
            input_bytes: 1 << 20,
            read_ahead: true,
            peak_rss_bytes: 64 << 20,
            predictions: Predictions::TopK {
                offsets: vec![0, 1],
                items: vec![4],
                scores: vec![f32::NAN.min(1.0)],
            },
        });
        roundtrip(FromWorker::InvalidInput {
            attempt: 4,
            row: 17,
        });
        roundtrip(ToWorker::Shutdown);
    }

    #[test]
    fn a_header_over_the_limit_is_refused() {
        let header = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes();
        assert!(matches!(body_len(header), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn a_garbage_body_is_a_decode_error_not_a_panic() {
        assert!(decode::<FromWorker>(&[0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn a_worker_of_another_version_is_refused_with_a_hint() {
        let err = check_hello(&FromWorker::Hello {
            version: PROTOCOL_VERSION + 1,
            host: "gpu1".into(),
            pid: 1,
        })
        .unwrap_err();
        assert!(err.contains("gpu1") && err.contains("protocol"), "{err}");
    }
}
