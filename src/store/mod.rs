//! The LMDB prediction store: versions, chunk commits, validation, flip, gc and
//! the reader API. (Being written.)

mod report;

pub use report::{Check, ValidationReport};
