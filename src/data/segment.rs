//! Row ranges described by part file, for readers other than the one that
//! planned them: the coordinator cuts a chunk into [`Segment`]s (a part
//! file, rows within it, and what must be found there), and a worker opens
//! only those parts, reads the rows itself and checks them, so a file that
//! changed after the run was planned fails the attempt naming the file
//! instead of scoring other rows under the planned ids.

use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Dataset, Error, PartView, Result, Source, parts};
use crate::model::{EntityIds, EntityKey, Rows};

/// Rows of one part file and what a reader must find there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// The part file: its path, or its URL ([`Dataset::part_names`]).
    pub part: PathBuf,
    /// The part's row count when the run was planned.
    pub part_rows: u64,
    /// Rows within the part.
    pub rows: Range<u64>,
    /// The ids of the first and last of those rows in the planner's index.
    pub first_id: EntityKey,
    pub last_id: EntityKey,
}

impl Dataset {
    /// Global rows `range` as segments, one per part file it touches, with
    /// the ids `ids` (the index of every row) holds for their ends. Empty
    /// for an empty range.
    ///
    /// # Panics
    /// When `range` is outside the dataset or `ids` is not its index.
    pub fn segments(&self, range: Range<u64>, ids: &EntityIds) -> Vec<Segment> {
        assert!(range.end <= self.num_rows() && ids.len() as u64 == self.num_rows());
        let mut out = Vec::new();
        for (p, part) in self.parts.iter().enumerate() {
            let (lo, hi) = (self.part_starts[p], self.part_starts[p + 1]);
            let (start, end) = (range.start.max(lo), range.end.min(hi));
            if start >= end {
                continue;
            }
            out.push(Segment {
                part: part.name.clone(),
                part_rows: hi - lo,
                rows: start - lo..end - lo,
                first_id: ids.key(start as usize),
                last_id: ids.key(end as usize - 1),
            });
        }
        out
    }

    /// The rows `segments` describe, in order, each checked: its part has
    /// the planned row count, and the first and last row the planned ids.
    /// A part this dataset does not hold, or one that changed, is an error
    /// naming the file.
    pub fn read_segments(&self, segments: &[Segment]) -> Result<Rows> {
        let total: u64 = segments.iter().map(|s| s.rows.end - s.rows.start).sum();
        let num_features = self.features.len();
        let mut out = Rows {
            ids: self.empty_ids(),
            num_features,
            features: vec![0f32; total as usize * num_features],
            history_offsets: Vec::new(),
            history_items: Vec::new(),
        };
        if self.history.is_some() {
            out.history_offsets.push(0);
        }
        let mut done = 0u64;
        for segment in segments {
            let Some(part) = self.parts.iter().find(|p| p.name == segment.part) else {
                return Err(Error::PartChanged {
                    path: segment.part.clone(),
                    message: format!(
                        "is not a part of this input ({}) here",
                        self.location.display()
                    ),
                });
            };
            let changed = |message: String| Error::PartChanged {
                path: segment.part.clone(),
                message,
            };
            // A local file rewritten since this reader opened it: its
            // footer (row counts, offsets) here is stale.
            if let Source::Local(path) = &part.source
                && parts::local_identity(path)? != part.identity
            {
                return Err(changed(
                    "changed (size or modification time) after this reader opened it".into(),
                ));
            }
            if part.num_rows() != segment.part_rows {
                return Err(changed(format!(
                    "has {} rows, but had {} when the run was planned",
                    part.num_rows(),
                    segment.part_rows
                )));
            }
            if segment.rows.start > segment.rows.end || segment.rows.end > part.num_rows() {
                return Err(Error::RangeOutOfBounds {
                    path: segment.part.clone(),
                    range: segment.rows.clone(),
                    rows: part.num_rows(),
                });
            }
            let n = segment.rows.end - segment.rows.start;
            if n == 0 {
                continue;
            }
            let before = out.ids.len();
            PartView { part, ds: self }.read_into(segment.rows.clone(), &mut out, done)?;
            for (row, want) in [
                (segment.rows.start, &segment.first_id),
                (segment.rows.end - 1, &segment.last_id),
            ] {
                let found = out.ids.key(before + (row - segment.rows.start) as usize);
                if found != *want {
                    return Err(changed(format!(
                        "row {row} has id {found}, but had id {want} when the run was planned"
                    )));
                }
            }
            done += n;
        }
        Ok(out)
    }
}
