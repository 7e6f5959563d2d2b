//! herd: batch inference across a few machines.
//!
//! The rooms below follow `docs/architecture.md`. Pure rooms (`config`, `plan`,
//! `sched`, `model`, `proto`) do no IO, read no clock and spawn nothing.

pub mod bench;
pub mod config;
pub mod data;
pub mod fleet;
pub mod gpu;
pub mod memory;
pub mod model;
pub mod plan;
pub mod proto;
pub mod run;
pub mod sched;
pub mod serve;
pub mod splitmix;
pub mod store;
pub mod table;
pub mod test_hooks;
pub mod ui;
pub mod worker;
