//! What the coordinator publishes while it runs: the UI (TUI or headless) is a
//! pure function of these events.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sched::{HostId, Snapshot};
use crate::store::ValidationReport;

/// A host's connection state, as the hosts table shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HostState {
    Connecting,
    /// Waiting in a batch queue: Slurm's state and reason
    /// (`PENDING (Priority)`).
    Pending(String),
    Running,
    Lost(String),
    /// Its workers exited after the run.
    Done,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub host: HostId,
    pub name: String,
    pub slots: u32,
    pub cost_per_hour: f64,
}

/// One thing that happened during a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The run began building `version`.
    Started {
        job: String,
        model: String,
        version: u64,
        rows_total: u64,
        chunks_total: u64,
        hosts: Vec<HostInfo>,
        live_version: Option<u64>,
        resumed: bool,
    },
    Host {
        host: HostId,
        state: HostState,
        backend: Option<String>,
        adapter: Option<String>,
    },
    /// A log line: worker stderr (source: the host and slot) or a run event
    /// (source: "run").
    Log {
        at: Duration,
        source: String,
        text: String,
    },
    /// The scheduler's whole view (every attempt and host): at the end of a
    /// run.
    Progress(Snapshot),
    /// What changed in the scheduler's view, published a few times a second
    /// while a run goes on: the figures, the worst stragglers, and the
    /// attempts and hosts that changed since the previous `Changes`;
    /// [`Snapshot::update`] puts it into the view held so far.
    Changes(Snapshot),
    /// Validation ran on the finished version.
    Validated(ValidationReport),
    /// The run ended (with or without a flip). Boxed: the report holds the
    /// whole timeline, and every other event is small.
    Finished(Box<Report>),
}

/// The run report (`--report FILE.json`); fields may be added, never renamed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub job: String,
    pub version: u64,
    pub flipped: bool,
    pub rows: u64,
    pub chunks: u64,
    pub attempts: u64,
    pub backups: u64,
    pub splits: u64,
    pub retries: u64,
    pub duration_s: f64,
    pub cost: f64,
    pub hosts: Vec<HostReport>,
    pub validation: ValidationReport,
    /// Seconds from the first chunk handed out to the last one committed
    /// (the makespan; excludes start-up and validation).
    pub scoring_s: f64,
    /// Per worker slot: what it did and how fast.
    pub slots: Vec<SlotReport>,
    /// Every attempt, in launch order: the partition timeline.
    pub timeline: Vec<AttemptReport>,
    /// Why the run did not flip, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub live_version: Option<u64>,
    /// Bytes of input rows the coordinator read and sent to workers
    /// (`Rows::byte_size`), plus the bytes of the row-range descriptors it
    /// sent instead where workers read their own rows. The index it scans to
    /// plan (ids, history lengths) is not counted.
    #[serde(default)]
    pub input_bytes_coordinator: u64,
    /// Bytes of input rows workers read themselves (`[input] read`).
    #[serde(default)]
    pub input_bytes_workers: u64,
    /// The coordinator's peak resident memory (0 where the system does not
    /// say).
    #[serde(default)]
    pub peak_rss_bytes: u64,
    /// Entities left out of the version by `[input] on_invalid = "skip"`.
    #[serde(default)]
    pub skipped: u64,
    /// The first [`MAX_SKIPPED_LISTED`] of them, by input row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_entities: Vec<SkippedEntity>,
}

/// The report lists at most this many skipped entities (`skipped` counts
/// them all).
pub const MAX_SKIPPED_LISTED: usize = 1_000;

/// An entity left out because of an invalid feature value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SkippedEntity {
    pub id: String,
    /// The 0-based input row.
    pub row: u64,
    /// Its first invalid feature column and that value (`null`, `NaN`, `inf`).
    pub column: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    pub name: String,
    pub backend: String,
    pub adapter: String,
    pub slots: u32,
    pub rows: u64,
    pub chunks: u64,
    pub attempts: u64,
    pub failures: u64,
    pub shipped_bytes: u64,
    pub busy_s: f64,
    pub cost: f64,
    /// Bytes of input rows this host's workers read themselves.
    #[serde(default)]
    pub input_bytes: u64,
    /// Its attempts whose rows its worker had begun reading ahead, on the
    /// coordinator's hint, before the attempt was handed to it.
    #[serde(default)]
    pub attempts_read_ahead: u64,
    /// The largest peak resident memory of this host's workers, as their
    /// last results said.
    #[serde(default)]
    pub peak_rss_bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotReport {
    pub slot: u32,
    pub host: String,
    pub attempts: u64,
    /// Rows its attempts computed (committed or not).
    pub rows: u64,
    /// Multiply-adds of those rows.
    pub cost: u64,
    pub busy_s: f64,
    /// `cost / busy_s`: the slot's measured speed.
    pub cost_per_s: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    pub attempt: u64,
    pub chunk: u64,
    pub slot: u32,
    pub host: String,
    pub start_s: f64,
    pub end_s: Option<f64>,
    /// Input rows `[start, end)` the attempt was given.
    pub rows: [u64; 2],
    pub rows_done: u64,
    /// running | done | cancelled | failed
    pub state: String,
    pub backup: bool,
    pub split: bool,
}
