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
    /// The part's identity when the run was planned ([`Dataset::identity`]'s
    /// line for it): size and modification time, or for an object its
    /// size, entity tag and modification time.
    pub identity: String,
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
                identity: part.identity.clone(),
                rows: start - lo..end - lo,
                first_id: ids.key(start as usize),
                last_id: ids.key(end as usize - 1),
            });
        }
        out
    }

    /// The rows `segments` describe, in order, each checked: its part is
    /// the one planned (an object's entity tag, a file's size), has the
    /// planned row count, and the first and last row the planned ids. A part
    /// this dataset does not hold, or one that changed, is an error naming
    /// the file.
    pub fn read_segments(&self, segments: &[Segment]) -> Result<Rows> {
        let total: u64 = segments.iter().map(|s| s.rows.end - s.rows.start).sum();
        let mut out = self.empty_rows(total as usize);
        let mut done = 0u64;
        for segment in segments {
            let part = self.planned_part(segment)?;
            if segment.rows.is_empty() {
                continue;
            }
            let before = out.ids.len();
            PartView { part, ds: self }.read_into(segment.rows.clone(), &mut out, done)?;
            let n = segment.rows.end - segment.rows.start;
            segment.check_end(&segment.first_id, segment.rows.start, &out.ids, before)?;
            segment.check_end(
                &segment.last_id,
                segment.rows.end - 1,
                &out.ids,
                before + n as usize - 1,
            )?;
            done += n;
        }
        Ok(out)
    }

    /// [`Dataset::read_segments`], handed to `each` in pieces of at most
    /// `piece_rows` rows as they are decoded (never spanning two parts), so
    /// a reader holds a few pieces instead of the whole chunk. Stops early,
    /// without an error, when `each` returns false. An error stops the
    /// stream where it is found: pieces before it may have been handed out.
    pub fn stream_segments(
        &self,
        segments: &[Segment],
        piece_rows: usize,
        mut each: impl FnMut(Rows) -> bool,
    ) -> Result<()> {
        for segment in segments {
            let part = self.planned_part(segment)?;
            if segment.rows.is_empty() {
                continue;
            }
            let mut at = segment.rows.start;
            let mut failed = None;
            let view = PartView { part, ds: self };
            let whole = view.read_pieces(segment.rows.clone(), piece_rows as u64, |piece| {
                let (first, last) = (at, at + piece.len() as u64 - 1);
                at = last + 1;
                let mut checked = Ok(());
                if first == segment.rows.start {
                    checked = segment.check_end(&segment.first_id, first, &piece.ids, 0);
                }
                if last + 1 == segment.rows.end && checked.is_ok() {
                    let i = piece.len() - 1;
                    checked = segment.check_end(&segment.last_id, last, &piece.ids, i);
                }
                match checked {
                    Ok(()) => each(piece),
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            if !whole {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The part `segment` names, checked against what was planned: the same
    /// part (see [`planned_elsewhere`]), with the same row count, holding
    /// the segment's rows.
    fn planned_part(&self, segment: &Segment) -> Result<&super::Part> {
        let Some(part) = self.parts.iter().find(|p| p.name == segment.part) else {
            return Err(Error::PartChanged {
                path: segment.part.clone(),
                message: format!(
                    "is not a part of this input ({}) here",
                    self.location.display()
                ),
            });
        };
        // A local file rewritten since this reader opened it: its footer
        // (row counts, offsets) here is stale.
        if let Source::Local(path) = &part.source
            && parts::local_identity(path)? != part.identity
        {
            return Err(segment.changed(
                "changed (size or modification time) after this reader opened it".into(),
            ));
        }
        if planned_elsewhere(part, &segment.identity) {
            return Err(segment.changed(format!(
                "changed after the run was planned (now '{}', planned '{}')",
                part.identity, segment.identity
            )));
        }
        if part.num_rows() != segment.part_rows {
            return Err(segment.changed(format!(
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
        Ok(part)
    }
}

impl Segment {
    fn changed(&self, message: String) -> Error {
        Error::PartChanged {
            path: self.part.clone(),
            message,
        }
    }

    /// Part row `row`, read as `ids[i]`, must have the planned id `want`.
    fn check_end(&self, want: &EntityKey, row: u64, ids: &EntityIds, i: usize) -> Result<()> {
        let found = ids.key(i);
        if found != *want {
            return Err(self.changed(format!(
                "row {row} has id {found}, but had id {want} when the run was planned"
            )));
        }
        Ok(())
    }
}

/// Whether `part`, as this reader opened it, differs from the part whose
/// identity was `planned`. An object in storage compares its whole identity
/// (the entity tag changes with every write); a local file only its size,
/// since a shared filesystem may show other machines a modification time at
/// another precision (its rows and ids are checked as they are read).
fn planned_elsewhere(part: &super::Part, planned: &str) -> bool {
    match part.source {
        Source::Remote(_) => part.identity != planned,
        Source::Local(_) => part.identity.split(' ').next() != planned.split(' ').next(),
    }
}
