//! The scheduler: a deterministic, sans-IO state machine in the manner of
//! quinn-proto. Inputs go in through [`Scheduler::handle`] and
//! [`Scheduler::handle_timeout`] with `now` as an argument; commands come out of
//! [`Scheduler::poll_command`]; [`Scheduler::poll_timeout`] says when to call
//! back. No IO, no clock, ordered maps only: the same inputs give the same
//! commands, in tests, in the simulated cluster ([`sim`]) and in real runs.

mod check;
mod index;
mod machine;
mod order;
pub mod sim;
mod straggler;
#[cfg(test)]
mod tests;
mod view;

pub use view::{HOSTS_REFRESHED_PER_PUBLISH, MAX_STRAGGLERS_PUBLISHED};

pub use machine::{
    CHECK_INTERVAL, EWMA_WEIGHT, MIN_RATE_SPAN, RATE_WINDOW, SILENCE_FACTOR, SILENCE_MIN,
    SILENCE_UNMEASURED, Scheduler,
};
pub use straggler::{
    BACKUP_BUDGET, BACKUP_SLOT_SHARE, MAX_SPLIT_PARTS, MIN_SPLIT_ROWS, SPECULATION_GAIN,
    SPECULATION_PEERS, SPECULATION_SLOWNESS, SPLIT_GAIN,
};

use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub type HostId = u32;
pub type ChunkId = u64;
pub type AttemptId = u64;

/// A worker slot: one worker process on one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotId(pub u32);

/// How work is handed out; each field switches one weapon against stragglers.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// false: static partition, one equal-row chunk per slot, no pulling.
    pub pull: bool,
    /// Chunks of equal cost (true) or equal rows (false).
    pub cost_aware: bool,
    /// Split the unfinished rest of a straggling chunk for idle slots.
    pub split_running: bool,
    /// Speculative backup attempts (LATE).
    pub speculation: bool,
    /// Attempts per chunk before the run fails.
    pub max_attempts: u32,
    /// Target multiply-adds per chunk.
    pub target_chunk_cost: u64,
}

/// What happened, as the driver saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A worker is ready on `slot` of `host`.
    SlotUp {
        slot: SlotId,
        host: HostId,
    },
    /// The worker on `slot` is gone; its running attempt failed.
    SlotDown {
        slot: SlotId,
        reason: String,
    },
    /// Every slot of `host` is gone.
    HostLost {
        host: HostId,
        reason: String,
    },
    /// The attempt has finished its first `rows_done` rows.
    Progress {
        attempt: AttemptId,
        rows_done: u64,
    },
    /// The attempt's predictions arrived.
    Finished {
        attempt: AttemptId,
    },
    Failed {
        attempt: AttemptId,
        error: String,
    },
    /// Stop or resume handing out new attempts.
    Pause(bool),
    /// The user asked for a backup attempt of this chunk.
    RequestBackup {
        chunk: ChunkId,
    },
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Run `rows` of the input on `slot` as a new attempt of `chunk`.
    Launch {
        attempt: AttemptId,
        chunk: ChunkId,
        slot: SlotId,
        rows: Range<u64>,
        backup: bool,
    },
    /// Stop the attempt; its results, if they come, are dropped.
    Cancel { attempt: AttemptId },
    /// The chunk was split: the attempt need only compute rows before `row`.
    StopAt { attempt: AttemptId, row: u64 },
    /// Write the first `rows.end - rows.start` predictions of the finished
    /// attempt as chunk `chunk`, covering input rows `rows`.
    Commit {
        chunk: ChunkId,
        attempt: AttemptId,
        rows: Range<u64>,
    },
    /// Every row is committed.
    Done,
    /// The run cannot finish.
    Fail {
        chunk: Option<ChunkId>,
        error: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptState {
    Running,
    Done,
    Cancelled,
    Failed,
}

/// One attempt as the UI and the report see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptView {
    pub attempt: AttemptId,
    pub chunk: ChunkId,
    pub slot: SlotId,
    pub host: HostId,
    pub start: Duration,
    pub end: Option<Duration>,
    pub rows: Range<u64>,
    pub rows_done: u64,
    pub state: AttemptState,
    /// A speculative backup of a chunk that had another attempt running.
    pub backup: bool,
    /// Its chunk was split while it ran (it stopped at the split point).
    pub split: bool,
    /// Estimated time left over the median of its running peers, the median
    /// taken as at least one check interval (1.0: as fast as its peers; 3.0:
    /// three times slower). 1.0 when no estimate exists or it is not running.
    pub slowness: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Straggler {
    pub chunk: ChunkId,
    pub attempt: AttemptId,
    pub eta: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub host: HostId,
    pub slots: u32,
    pub busy: u32,
    pub rows_done: u64,
    pub chunks_done: u64,
    pub failures: u64,
    /// Rows per second over its finished and running attempts.
    pub rows_per_s: f64,
    pub lost: bool,
}

/// Everything the UI and the report need, at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub now: Duration,
    pub rows_total: u64,
    pub rows_done: u64,
    pub cost_total: u64,
    pub cost_done: u64,
    pub chunks_total: u64,
    pub chunks_done: u64,
    pub attempts: Vec<AttemptView>,
    pub hosts: Vec<HostView>,
    pub stragglers: Vec<Straggler>,
    pub eta: Option<Duration>,
    pub paused: bool,
    pub backups: u64,
    pub splits: u64,
}
