//! Asking the kernel for a local read's bytes ahead of its decoder
//! (`POSIX_FADV_WILLNEED`, Linux): an input that is not in the page cache is
//! then read from disk in the background while the pages before are
//! decoded, instead of one column chunk after another, each a wait. At most
//! [`AHEAD_BYTES`] are asked for ahead of where the read is, so a long read
//! (a large chunk, the scan of a whole input) never asks for more than the
//! page cache keeps until it is read. Advice only: when it fails, or off
//! Linux, a read is as fast as without it. An object's bytes are fetched
//! whole before a read anyway (`remote`).

use std::fs::File;
use std::ops::Range;

use super::Source;
use super::decode::{PartView, column_ranges};

/// Bytes asked for ahead of a read at most (the row group it is in always,
/// whatever its size).
pub(super) const AHEAD_BYTES: u64 = 64 << 20;

/// The row groups of one read of a part, asked for a window at a time.
pub(super) struct Advice {
    /// The part, open for the advice; `None` when nothing is asked for.
    file: Option<File>,
    /// The first row (the part's numbering) of each of the read's row
    /// groups, in row order.
    first_rows: Vec<u64>,
    /// Each group's column chunks' bytes, those that touch joined.
    ranges: Vec<Vec<Range<u64>>>,
    /// Each group's size in bytes (of its `ranges`), kept for the window.
    sizes: Vec<u64>,
    /// Groups asked for so far, from the first.
    asked: usize,
}

impl Advice {
    /// For a read of `columns` (root indices) of `row_groups` (ascending)
    /// of `view`'s part; asks for nothing yet.
    pub(super) fn new(view: &PartView<'_>, row_groups: &[usize], columns: &[usize]) -> Advice {
        let file = match &view.part.source {
            Source::Local(path) if cfg!(target_os = "linux") => File::open(path).ok(),
            _ => None,
        };
        let mut advice = Advice {
            file,
            first_rows: Vec::new(),
            ranges: Vec::new(),
            sizes: Vec::new(),
            asked: 0,
        };
        if advice.file.is_some() {
            for &g in row_groups {
                let ranges = touching(column_ranges(&view.part.metadata, &[g], columns));
                advice.first_rows.push(view.part.row_group_starts[g]);
                advice
                    .sizes
                    .push(ranges.iter().map(|r| r.end - r.start).sum());
                advice.ranges.push(ranges);
            }
        }
        advice
    }

    /// The read is at `row` (the part's numbering): asks for the row group
    /// holding it, then for those after it while what is asked for and not
    /// passed yet stays within [`AHEAD_BYTES`].
    pub(super) fn at_row(&mut self, row: u64) {
        if self.file.is_none() || self.first_rows.is_empty() {
            return;
        }
        let here = self
            .first_rows
            .partition_point(|&first| first <= row)
            .saturating_sub(1);
        let to = window(&self.sizes, here, self.asked, AHEAD_BYTES);
        for group in self.asked.max(here)..to {
            self.ask(group);
        }
        self.asked = self.asked.max(to);
    }

    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
    fn ask(&self, group: usize) {
        #[cfg(target_os = "linux")]
        if let Some(file) = &self.file {
            use std::os::fd::AsRawFd;
            for r in &self.ranges[group] {
                let (Ok(at), Ok(len)) = (
                    libc::off_t::try_from(r.start),
                    libc::off_t::try_from(r.end - r.start),
                ) else {
                    continue;
                };
                // SAFETY: posix_fadvise reads and writes no memory of this
                // process; the descriptor is open for the call's length.
                unsafe {
                    libc::posix_fadvise(file.as_raw_fd(), at, len, libc::POSIX_FADV_WILLNEED);
                }
            }
        }
    }
}

/// Where the groups asked for should end (exclusive) when the read is in
/// group `here` and those before `asked` were asked for already: past
/// `here`, and past as many groups after it as fit in `limit` bytes
/// together with those asked for and not yet passed (`sizes` each
/// group's bytes).
fn window(sizes: &[u64], here: usize, asked: usize, limit: u64) -> usize {
    let mut end = asked.max(here);
    let mut ahead: u64 = sizes[here.min(end)..end].iter().sum();
    while let Some(&next) = sizes.get(end) {
        if end > here && ahead + next > limit {
            break;
        }
        ahead += next;
        end += 1;
    }
    end
}

/// `ranges` sorted, with those that overlap or touch joined (a row group's
/// column chunks lie end to end).
fn touching(ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    super::span::join(ranges, 0, u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::{touching, window};

    #[test]
    fn advised_ranges_join_where_they_touch_or_overlap_and_only_there() {
        // A row group's column chunks end to end, another group's after a
        // gap, one chunk given twice, out of order.
        let given = vec![40..50, 0..10, 10..25, 25..30, 45..60, 0..10, 70..71];
        assert_eq!(touching(given), vec![0..30, 40..60, 70..71]);
        assert_eq!(touching(Vec::new()), Vec::<std::ops::Range<u64>>::new());
    }

    #[test]
    fn the_window_asks_for_the_group_read_and_what_fits_after_it() {
        let sizes = [10, 10, 30, 10, 100, 10];
        // From the start: groups 0 and 1 fit in 25 bytes, 2 does not.
        assert_eq!(window(&sizes, 0, 0, 25), 2);
        // The read moved into group 1: 0 is passed, 1 asked already, 2 not
        // within 25 with it; nothing new.
        assert_eq!(window(&sizes, 1, 2, 25), 2);
        // Into group 2: asked for even though larger than the window alone.
        assert_eq!(window(&sizes, 2, 2, 25), 3);
        // Group 4 alone is larger than the window: asked for only once the
        // read is in it.
        assert_eq!(window(&sizes, 3, 3, 25), 4);
        assert_eq!(window(&sizes, 4, 4, 25), 5);
        // A read that jumped past groups never asked for them.
        assert_eq!(window(&sizes, 5, 1, 25), 6);
        assert_eq!(window(&sizes, 5, 6, 25), 6);
        // A window larger than everything: all at once.
        assert_eq!(window(&sizes, 0, 0, 1000), 6);
    }
}
