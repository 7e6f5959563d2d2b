//! Job and fleet configuration: `jobs/*.toml` and `hosts.toml`.
//!
//! Two stages, as ripgrep does with its flags: [`raw`] mirrors the TOML exactly
//! (unknown keys are errors) and only checks what serde can; the resolve stage
//! (`job.rs` for job files, with `output.rs` for `[output]` and its sinks,
//! `fleet.rs` for fleets, all through `source.rs`, which locates values and
//! shares the checks, and `toml_error.rs`, which rewrites parser errors)
//! checks rules across fields, turns relative paths into paths relative to
//! the file that names them, and produces the settings the rest of herd
//! uses.
//!
//! Pure: callers hand in the file's text and its path; nothing here touches
//! the file system (whether a named file exists is checked by the caller).

mod fleet;
mod job;
pub mod location;
mod output;
pub mod raw;
mod slurm;
pub mod source;
#[cfg(test)]
mod tests;
mod toml_error;

use std::path::PathBuf;

pub use fleet::*;
pub use job::*;
pub use location::{Location, Storage};
pub use output::*;
pub use source::MAX_NAME_LEN;

pub type Result<T> = std::result::Result<T, Error>;

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), location(*line, *column))]
pub struct Error {
    pub file: PathBuf,
    /// 1-based line and column of the offending value, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}
