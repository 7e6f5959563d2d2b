//! Entity costs to chunks of equal cost; splitting a range.
//!
//! A chunk is a range of consecutive input rows. Chunks of equal *cost*
//! (multiply-adds), not equal rows, are the first weapon against stragglers:
//! one user with a history of thousands of items costs as much as hundreds of
//! short ones. This room only does arithmetic on row ranges: it reads no data,
//! does no IO and keeps no state between calls.

use std::ops::Range;

/// Prefix sums of per-row costs: the cost of any row range in O(1) and the row
/// where a running cost is reached in O(log n).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostIndex {
    /// `prefix[i]` is the cost of rows `0..i`; `prefix.len() == rows + 1`.
    prefix: Vec<u64>,
}

impl CostIndex {
    /// Costs that overflow `u64` in total saturate at `u64::MAX`.
    pub fn new(costs: &[u64]) -> CostIndex {
        let mut prefix = Vec::with_capacity(costs.len() + 1);
        let mut total = 0u64;
        prefix.push(0);
        for &cost in costs {
            total = total.saturating_add(cost);
            prefix.push(total);
        }
        CostIndex { prefix }
    }

    /// Number of rows.
    pub fn rows(&self) -> u64 {
        (self.prefix.len() - 1) as u64
    }

    /// Cost of every row.
    pub fn total(&self) -> u64 {
        self.prefix[self.prefix.len() - 1]
    }

    /// Cost of `range`, clipped to the rows that exist.
    pub fn cost(&self, range: Range<u64>) -> u64 {
        let n = self.rows();
        let end = range.end.min(n);
        let start = range.start.min(end);
        self.prefix[end as usize] - self.prefix[start as usize]
    }

    /// Cost of the single row `row` (0 past the end).
    pub fn row_cost(&self, row: u64) -> u64 {
        self.cost(row..row + 1)
    }

    /// The smallest row `r` in `range.start..=range.end` such that
    /// `cost(range.start..r) >= cost`; `range.end` when the range costs less.
    pub fn row_reaching(&self, range: Range<u64>, cost: u64) -> u64 {
        let end = range.end.min(self.rows());
        let start = range.start.min(end);
        let goal = self.prefix[start as usize].saturating_add(cost);
        // First index in prefix[start..=end] whose value is >= goal.
        let window = &self.prefix[start as usize..=end as usize];
        let offset = window.partition_point(|&p| p < goal);
        (start + offset as u64).min(end)
    }
}

/// `done` ranges sorted, clipped to `0..rows` and merged; empty ones dropped.
pub fn normalize(done: &[Range<u64>], rows: u64) -> Vec<Range<u64>> {
    let mut ranges: Vec<Range<u64>> = done
        .iter()
        .map(|r| r.start.min(rows)..r.end.min(rows))
        .filter(|r| r.start < r.end)
        .collect();
    ranges.sort_by_key(|r| (r.start, r.end));
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// The rows of `0..rows` not covered by `done`, as maximal ranges in order.
pub fn gaps(rows: u64, done: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0;
    for range in normalize(done, rows) {
        if range.start > at {
            out.push(at..range.start);
        }
        at = range.end;
    }
    if at < rows {
        out.push(at..rows);
    }
    out
}

/// Chunks of roughly equal cost over rows `0..costs.len()`: greedy consecutive
/// ranges whose cost reaches `target`; an entity costing more than the target
/// gets a chunk of its own. Skips `done` ranges (already committed, for
/// `--resume`); a chunk never spans a done range. A `target` of 0 is taken as
/// 1 (every row with a cost closes its chunk).
pub fn chunks_by_cost(costs: &[u64], target: u64, done: &[Range<u64>]) -> Vec<Range<u64>> {
    let target = target.max(1);
    let mut chunks = Vec::new();
    for gap in gaps(costs.len() as u64, done) {
        let mut start = gap.start;
        let mut acc = 0u64;
        for row in gap.clone() {
            let cost = costs[row as usize];
            if cost > target && row > start {
                chunks.push(start..row);
                start = row;
                acc = 0;
            }
            acc = acc.saturating_add(cost);
            if acc >= target {
                chunks.push(start..row + 1);
                start = row + 1;
                acc = 0;
            }
        }
        if start < gap.end {
            chunks.push(start..gap.end);
        }
    }
    chunks
}

/// `n` ranges of (nearly) equal rows over the rows of `0..rows` not in `done`.
/// A chunk that would span a done range is cut there, so resuming can give
/// more than `n` ranges; fewer than `n` rows left give one range per row.
/// An `n` of 0 is taken as 1.
pub fn chunks_by_rows(rows: u64, n: u64, done: &[Range<u64>]) -> Vec<Range<u64>> {
    let gaps = gaps(rows, done);
    let left: u64 = gaps.iter().map(|g| g.end - g.start).sum();
    let n = n.max(1).min(left.max(1));
    let base = left / n;
    let extra = left % n;
    let mut chunks = Vec::new();
    let mut gaps = gaps.into_iter();
    let mut gap = match gaps.next() {
        Some(g) => g,
        None => return chunks,
    };
    for i in 0..n {
        let mut want = base + u64::from(i < extra);
        while want > 0 {
            if gap.start == gap.end {
                match gaps.next() {
                    Some(g) => gap = g,
                    None => return chunks,
                }
            }
            let take = want.min(gap.end - gap.start);
            chunks.push(gap.start..gap.start + take);
            gap.start += take;
            want -= take;
        }
    }
    chunks
}

/// Split `range` (whose rows before `split_at` are done or running) into up to
/// `parts` ranges of equal remaining cost covering `split_at..range.end`.
/// Every range returned holds at least one row; zero-cost rests are split by
/// rows. `split_at` is clamped into `range`; `parts` of 0 is taken as 1.
pub fn split_rest(
    costs: &[u64],
    range: Range<u64>,
    split_at: u64,
    parts: usize,
) -> Vec<Range<u64>> {
    let end = range.end.min(costs.len() as u64);
    let start = split_at.clamp(range.start.min(end), end);
    let index = CostIndex::new(&costs[start as usize..end as usize]);
    index
        .split(0..end - start, parts as u64)
        .into_iter()
        .map(|r| r.start + start..r.end + start)
        .collect()
}

impl CostIndex {
    /// `range` cut into up to `parts` non-empty consecutive ranges of equal
    /// cost (equal rows when the range costs nothing).
    pub fn split(&self, range: Range<u64>, parts: u64) -> Vec<Range<u64>> {
        let end = range.end.min(self.rows());
        let start = range.start.min(end);
        let rows = end - start;
        if rows == 0 {
            return Vec::new();
        }
        let parts = parts.max(1).min(rows);
        let total = self.cost(start..end);
        if total == 0 {
            return chunks_by_rows(rows, parts, &[])
                .into_iter()
                .map(|r| r.start + start..r.end + start)
                .collect();
        }
        let mut out = Vec::with_capacity(parts as usize);
        let mut at = start;
        for k in 1..parts {
            // Cut where the running cost first reaches k/parts of the total,
            // leaving at least one row for every later part.
            let goal = (u128::from(total) * u128::from(k) / u128::from(parts)) as u64;
            let mut cut = self.row_reaching(start..end, goal);
            // The row before may land nearer the goal.
            if cut > start && goal - self.cost(start..cut - 1) <= self.cost(start..cut) - goal {
                cut -= 1;
            }
            let cut = cut.max(at + 1).min(end - (parts - k));
            if cut > at {
                out.push(at..cut);
                at = cut;
            }
        }
        out.push(at..end);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiles(chunks: &[Range<u64>], rows: Range<u64>) -> bool {
        let mut at = rows.start;
        for c in chunks {
            if c.start != at || c.end <= c.start {
                return false;
            }
            at = c.end;
        }
        at == rows.end
    }

    #[test]
    fn cost_index_answers_range_costs() {
        let index = CostIndex::new(&[1, 2, 3, 4]);
        assert_eq!(index.total(), 10);
        assert_eq!(index.cost(1..3), 5);
        assert_eq!(index.cost(3..9), 4);
        assert_eq!(index.row_reaching(0..4, 3), 2);
        assert_eq!(index.row_reaching(1..4, 3), 3);
        assert_eq!(index.row_reaching(0..4, 100), 4);
    }

    #[test]
    fn chunks_by_cost_reach_the_target() {
        let costs = [1, 1, 1, 1, 1, 1, 1];
        assert_eq!(chunks_by_cost(&costs, 3, &[]), vec![0..3, 3..6, 6..7]);
    }

    #[test]
    fn an_entity_above_the_target_gets_a_chunk_of_its_own() {
        let costs = [1, 1, 50, 1, 1, 1];
        assert_eq!(chunks_by_cost(&costs, 3, &[]), vec![0..2, 2..3, 3..6]);
    }

    #[test]
    fn done_ranges_are_skipped_and_never_spanned() {
        let costs = [1; 10];
        let done = [2..5, 12..20]; // the second lies past the rows
        let chunks = chunks_by_cost(&costs, 4, &done);
        assert_eq!(chunks, vec![0..2, 5..9, 9..10]);
        let rows = chunks_by_rows(10, 2, &done);
        assert!(rows.iter().all(|r| r.end <= 2 || r.start >= 5));
        assert_eq!(rows.iter().map(|r| r.end - r.start).sum::<u64>(), 7);
    }

    #[test]
    fn chunks_by_rows_are_nearly_equal() {
        let chunks = chunks_by_rows(10, 3, &[]);
        assert_eq!(chunks, vec![0..4, 4..7, 7..10]);
        assert_eq!(chunks_by_rows(2, 5, &[]), vec![0..1, 1..2]);
        assert!(chunks_by_rows(0, 5, &[]).is_empty());
    }

    #[test]
    fn split_rest_balances_remaining_cost() {
        let costs = [9, 9, 1, 1, 1, 1, 4, 4];
        let parts = split_rest(&costs, 0..8, 2, 2);
        assert!(tiles(&parts, 2..8));
        assert_eq!(parts, vec![2..6, 6..8]);
        assert_eq!(split_rest(&costs, 0..8, 7, 4), vec![7..8]);
        assert!(split_rest(&costs, 0..8, 8, 2).is_empty());
        assert!(tiles(&split_rest(&[0; 6], 0..6, 1, 2), 1..6));
    }
}
