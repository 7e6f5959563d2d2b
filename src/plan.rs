//! Entity costs to chunks of equal cost; splitting a range.
//!
//! A chunk is a range of consecutive input rows. Chunks of equal *cost*
//! (multiply-adds), not equal rows, are the first weapon against stragglers:
//! one user with a history of thousands of items costs as much as hundreds of
//! short ones. This room only does arithmetic on row ranges: it reads no data,
//! does no IO and keeps no state between calls.
//!
//! Costs at scale. A job of 500 million entities cannot keep a `u64` per
//! entity (4 GB) in the coordinator. A [`CostIndex`] keeps, per block of
//! [`COST_BLOCK_ROWS`] rows, the cost of every row before it and the costliest
//! row in it (16 bytes per block: 31 MB for 500 million rows). A row's own
//! cost is recomputed from its [`RowCosts`] source (the history lengths the
//! coordinator reads anyway, or a formula in the simulator) only where a query
//! ends inside a block: a range's cost reads at most half a block at each end,
//! the row where a running cost is reached one block after a binary search.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// Rows per block of a [`CostIndex`] built with [`CostIndex::from_source`].
pub const COST_BLOCK_ROWS: u64 = 256;

/// Rows whose costs are read from a source at once.
const READ_ROWS: usize = 256;

/// Where per-row costs come from. Implementations compute them on demand (a
/// history length times a per-item cost, a seeded formula) or hold them.
pub trait RowCosts: fmt::Debug + Send + Sync {
    /// Number of rows.
    fn rows(&self) -> u64;
    /// The costs of rows `start..start + out.len()`, all of which exist.
    fn fill(&self, start: u64, out: &mut [u64]);
}

/// Costs held row by row (tests, small scenarios).
impl RowCosts for Vec<u64> {
    fn rows(&self) -> u64 {
        self.len() as u64
    }

    fn fill(&self, start: u64, out: &mut [u64]) {
        let start = start as usize;
        out.copy_from_slice(&self[start..start + out.len()]);
    }
}

/// A row costs `fixed + min(history length, max_items) x per_item`: the
/// shape of every model's cost (a fixed part and a part per history item).
/// Without history lengths every one of `rows` rows costs `fixed`.
#[derive(Clone, Debug)]
pub struct HistoryCosts {
    pub rows: u64,
    /// One per row, or empty.
    pub lens: Arc<[u32]>,
    pub fixed: u64,
    pub per_item: u64,
    pub max_items: u64,
}

impl RowCosts for HistoryCosts {
    fn rows(&self) -> u64 {
        self.rows
    }

    fn fill(&self, start: u64, out: &mut [u64]) {
        if self.lens.is_empty() {
            out.fill(self.fixed);
            return;
        }
        let start = start as usize;
        let lens = &self.lens[start..start + out.len()];
        for (cost, &len) in out.iter_mut().zip(lens) {
            *cost = self.fixed + u64::from(len).min(self.max_items) * self.per_item;
        }
    }
}

/// A row's cost as a function of its history length, from a table made once
/// per length: what a run's coordinator keeps instead of a cost per row
/// (the history lengths are the input's index, read anyway). Lengths up to
/// [`MAX_COST_TABLE_LEN`] (or the longest present, if shorter) are in a dense
/// table; longer ones, each one distinct length present, in a map (a row
/// with such a history holds millions of items in the input, so there are
/// few).
#[derive(Clone, Debug)]
pub struct LengthCosts {
    rows: u64,
    /// One per row, or empty (every row then has no history).
    lens: Arc<[u32]>,
    table: Vec<u64>,
    long: std::collections::BTreeMap<u32, u64>,
}

/// The longest history length a [`LengthCosts`] keeps in its dense table
/// (8 MiB of costs).
pub const MAX_COST_TABLE_LEN: u32 = 1 << 20;

impl LengthCosts {
    /// `rows` rows with histories of `lens` (empty: none), each costing
    /// `cost(history length)`.
    pub fn new(rows: u64, lens: Arc<[u32]>, cost: impl Fn(usize) -> u64) -> LengthCosts {
        let longest = lens.iter().copied().max().unwrap_or(0);
        let dense = longest.min(MAX_COST_TABLE_LEN);
        let table = (0..=dense).map(|len| cost(len as usize)).collect();
        let mut long = std::collections::BTreeMap::new();
        if longest > dense {
            for &len in lens.iter().filter(|&&len| len > dense) {
                long.entry(len).or_insert_with(|| cost(len as usize));
            }
        }
        LengthCosts {
            rows,
            lens,
            table,
            long,
        }
    }

    fn of(&self, len: u32) -> u64 {
        match self.table.get(len as usize) {
            Some(&c) => c,
            None => self.long[&len],
        }
    }
}

impl RowCosts for LengthCosts {
    fn rows(&self) -> u64 {
        self.rows
    }

    fn fill(&self, start: u64, out: &mut [u64]) {
        if self.lens.is_empty() {
            out.fill(self.table[0]);
            return;
        }
        let start = start as usize;
        let lens = &self.lens[start..start + out.len()];
        for (cost, &len) in out.iter_mut().zip(lens) {
            *cost = self.of(len);
        }
    }
}

/// The cost of any row range and the row where a running cost is reached,
/// from prefix sums per block of rows and a [`RowCosts`] source for the rows
/// inside a block. Cheap to clone (shared, immutable). Totals that overflow
/// `u64` saturate.
#[derive(Clone)]
pub struct CostIndex {
    source: Arc<dyn RowCosts>,
    rows: u64,
    block: u64,
    /// `prefix[b]`: the cost of rows `0..b * block`; one more than blocks.
    prefix: Arc<[u64]>,
    /// The costliest row of each block.
    block_max: Arc<[u64]>,
    max_row: u64,
}

impl fmt::Debug for CostIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CostIndex")
            .field("rows", &self.rows)
            .field("total", &self.total())
            .field("block", &self.block)
            .field("source", &self.source)
            .finish()
    }
}

impl From<Vec<u64>> for CostIndex {
    fn from(costs: Vec<u64>) -> CostIndex {
        CostIndex::from_source(Arc::new(costs))
    }
}

impl CostIndex {
    /// An index over a copy of `costs`.
    pub fn new(costs: &[u64]) -> CostIndex {
        CostIndex::from(costs.to_vec())
    }

    /// An index over `source` in blocks of [`COST_BLOCK_ROWS`]: one pass over
    /// every row.
    pub fn from_source(source: Arc<dyn RowCosts>) -> CostIndex {
        CostIndex::with_block(source, COST_BLOCK_ROWS)
    }

    /// An index over `source` in blocks of `block` rows (at least 1).
    pub fn with_block(source: Arc<dyn RowCosts>, block: u64) -> CostIndex {
        let block = block.max(1);
        let rows = source.rows();
        let blocks = rows.div_ceil(block) as usize;
        let mut prefix = Vec::with_capacity(blocks + 1);
        let mut block_max = Vec::with_capacity(blocks);
        let mut total = 0u64;
        prefix.push(0);
        let mut buf = [0u64; READ_ROWS];
        for b in 0..blocks as u64 {
            let (start, end) = (b * block, ((b + 1) * block).min(rows));
            let (mut sum, mut max) = (0u64, 0u64);
            let mut at = start;
            while at < end {
                let n = ((end - at) as usize).min(READ_ROWS);
                source.fill(at, &mut buf[..n]);
                for &cost in &buf[..n] {
                    sum = sum.saturating_add(cost);
                    max = max.max(cost);
                }
                at += n as u64;
            }
            total = total.saturating_add(sum);
            prefix.push(total);
            block_max.push(max);
        }
        let max_row = block_max.iter().copied().max().unwrap_or(0);
        CostIndex {
            source,
            rows,
            block,
            prefix: prefix.into(),
            block_max: block_max.into(),
            max_row,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Cost of every row.
    pub fn total(&self) -> u64 {
        self.prefix[self.prefix.len() - 1]
    }

    /// The cost of the costliest row (0 without rows).
    pub fn max_row_cost(&self) -> u64 {
        self.max_row
    }

    /// Bytes the index holds besides its source.
    pub fn index_bytes(&self) -> usize {
        (self.prefix.len() + self.block_max.len()) * size_of::<u64>()
    }

    /// Sum of the source's costs over `range` (rows that exist).
    fn sum(&self, range: Range<u64>) -> u64 {
        let mut buf = [0u64; READ_ROWS];
        let mut sum = 0u64;
        let mut at = range.start;
        while at < range.end {
            let n = ((range.end - at) as usize).min(READ_ROWS);
            self.source.fill(at, &mut buf[..n]);
            sum = buf[..n].iter().fold(sum, |s, &c| s.saturating_add(c));
            at += n as u64;
        }
        sum
    }

    /// Cost of rows `0..row` (`row` at most `rows`), reading the shorter side
    /// of its block.
    fn prefix_at(&self, row: u64) -> u64 {
        let b = row / self.block;
        let block_start = b * self.block;
        if row == block_start {
            return self.prefix[b as usize];
        }
        let block_end = (block_start + self.block).min(self.rows);
        if row - block_start <= block_end - row {
            self.prefix[b as usize].saturating_add(self.sum(block_start..row))
        } else {
            self.prefix[b as usize + 1].saturating_sub(self.sum(row..block_end))
        }
    }

    /// Cost of rows `0..row` (clipped to the rows that exist).
    pub fn prefix(&self, row: u64) -> u64 {
        self.prefix_at(row.min(self.rows))
    }

    /// Cost of `range`, clipped to the rows that exist.
    pub fn cost(&self, range: Range<u64>) -> u64 {
        let end = range.end.min(self.rows);
        let start = range.start.min(end);
        if start == end {
            return 0;
        }
        if start / self.block == (end - 1) / self.block {
            return self.sum(start..end);
        }
        self.prefix_at(end).saturating_sub(self.prefix_at(start))
    }

    /// Cost of the single row `row` (0 past the end).
    pub fn row_cost(&self, row: u64) -> u64 {
        self.cost(row..row + 1)
    }

    /// The smallest row `r` in `range.start..=range.end` such that
    /// `cost(range.start..r) >= cost`; `range.end` when the range costs less.
    pub fn row_reaching(&self, range: Range<u64>, cost: u64) -> u64 {
        let end = range.end.min(self.rows);
        let start = range.start.min(end);
        if cost == 0 || start == end {
            return start;
        }
        let base = self.prefix_at(start);
        let goal = base.saturating_add(cost);
        // The first block boundary after `start` where the prefix reaches the
        // goal; the row that reaches it lies in the block just before.
        let first = (start / self.block) as usize;
        let k = first + 1 + self.prefix[first + 1..].partition_point(|&p| p < goal);
        if k >= self.prefix.len() {
            return end;
        }
        let block_start = (k as u64 - 1) * self.block;
        let (mut at, mut acc) = if block_start > start {
            (block_start, self.prefix[k - 1])
        } else {
            (start, base)
        };
        let stop = (k as u64 * self.block).min(end);
        let mut buf = [0u64; READ_ROWS];
        while at < stop {
            let n = ((stop - at) as usize).min(READ_ROWS);
            self.source.fill(at, &mut buf[..n]);
            for (i, &c) in buf[..n].iter().enumerate() {
                acc = acc.saturating_add(c);
                if acc >= goal {
                    return at + i as u64 + 1;
                }
            }
            at += n as u64;
        }
        end
    }

    /// The first row of `range` costing more than `limit`, skipping blocks
    /// whose costliest row is within it.
    fn first_above(&self, range: Range<u64>, limit: u64) -> Option<u64> {
        let mut at = range.start;
        while at < range.end {
            let b = at / self.block;
            let block_end = ((b + 1) * self.block).min(range.end);
            if self.block_max[b as usize] > limit {
                let mut buf = [0u64; READ_ROWS];
                let mut row = at;
                while row < block_end {
                    let n = ((block_end - row) as usize).min(READ_ROWS);
                    self.source.fill(row, &mut buf[..n]);
                    if let Some(i) = buf[..n].iter().position(|&c| c > limit) {
                        return Some(row + i as u64);
                    }
                    row += n as u64;
                }
            }
            at = block_end;
        }
        None
    }

    /// Chunks of roughly equal cost over the rows not in `done` (already
    /// committed, for `--resume`): greedy consecutive ranges whose cost
    /// reaches `target`; an entity costing more than the target gets a chunk
    /// of its own, and a chunk never spans a done range. A `target` of 0 is
    /// taken as 1 (every row with a cost closes its chunk). Work per chunk:
    /// its blocks, plus the rows of blocks holding a row above the target.
    pub fn chunks_by_cost(&self, target: u64, done: &[Range<u64>]) -> Vec<Range<u64>> {
        let target = target.max(1);
        let mut chunks = Vec::new();
        for gap in gaps(self.rows, done) {
            let mut start = gap.start;
            while start < gap.end {
                let reach = self.row_reaching(start..gap.end, target);
                let end = match self.first_above(start..reach, target) {
                    Some(big) if big > start => big,
                    Some(big) => big + 1,
                    None => reach,
                };
                chunks.push(start..end);
                start = end;
            }
        }
        chunks
    }

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

    fn blocked(costs: &[u64], block: u64) -> CostIndex {
        CostIndex::with_block(Arc::new(costs.to_vec()), block)
    }

    #[test]
    fn cost_index_answers_range_costs() {
        for block in [1, 2, 3, 256] {
            let index = blocked(&[1, 2, 3, 4], block);
            assert_eq!(index.total(), 10);
            assert_eq!(index.cost(1..3), 5);
            assert_eq!(index.cost(3..9), 4);
            assert_eq!(index.row_cost(2), 3);
            assert_eq!(index.row_reaching(0..4, 3), 2);
            assert_eq!(index.row_reaching(1..4, 3), 3);
            assert_eq!(index.row_reaching(0..4, 100), 4);
            assert_eq!(index.row_reaching(0..3, 7), 3, "block {block}");
            assert_eq!(index.max_row_cost(), 4);
        }
    }

    #[test]
    fn history_costs_clip_the_history() {
        let costs = HistoryCosts {
            rows: 3,
            lens: vec![0, 5, 50].into(),
            fixed: 100,
            per_item: 2,
            max_items: 10,
        };
        let index = CostIndex::from_source(Arc::new(costs));
        assert_eq!(
            (0..3).map(|r| index.row_cost(r)).collect::<Vec<_>>(),
            vec![100, 110, 120]
        );
        let flat = HistoryCosts {
            rows: 4,
            lens: Vec::new().into(),
            fixed: 7,
            per_item: 2,
            max_items: 10,
        };
        assert_eq!(CostIndex::from_source(Arc::new(flat)).total(), 28);
    }

    #[test]
    fn chunks_by_cost_reach_the_target() {
        let costs = [1, 1, 1, 1, 1, 1, 1];
        for block in [1, 2, 4, 256] {
            let index = blocked(&costs, block);
            assert_eq!(index.chunks_by_cost(3, &[]), vec![0..3, 3..6, 6..7]);
        }
    }

    #[test]
    fn an_entity_above_the_target_gets_a_chunk_of_its_own() {
        let costs = [1, 1, 50, 1, 1, 1];
        for block in [1, 2, 4, 256] {
            let index = blocked(&costs, block);
            assert_eq!(index.chunks_by_cost(3, &[]), vec![0..2, 2..3, 3..6]);
        }
    }

    #[test]
    fn done_ranges_are_skipped_and_never_spanned() {
        let costs = [1; 10];
        let done = [2..5, 12..20]; // the second lies past the rows
        let chunks = CostIndex::new(&costs).chunks_by_cost(4, &done);
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
    fn split_balances_remaining_cost() {
        let costs = [9, 9, 1, 1, 1, 1, 4, 4];
        for block in [1, 3, 256] {
            let index = blocked(&costs, block);
            let parts = index.split(2..8, 2);
            assert!(tiles(&parts, 2..8));
            assert_eq!(parts, vec![2..6, 6..8]);
            assert_eq!(index.split(7..8, 4), vec![7..8]);
            assert!(index.split(8..8, 2).is_empty());
        }
        assert!(tiles(&CostIndex::new(&[0; 6]).split(1..6, 2), 1..6));
    }

    #[test]
    fn the_index_holds_16_bytes_per_block() {
        let index = CostIndex::from_source(Arc::new(HistoryCosts {
            rows: 1_000_000,
            lens: Vec::new().into(),
            fixed: 3,
            per_item: 0,
            max_items: 0,
        }));
        let blocks = 1_000_000usize.div_ceil(COST_BLOCK_ROWS as usize);
        assert_eq!(index.index_bytes(), (2 * blocks + 1) * 8);
        assert_eq!(index.total(), 3_000_000);
        assert_eq!(index.cost(300..1_000_000), 3 * 999_700);
    }

    /// The coordinator's costs: each row's from its history length, the
    /// longest past the dense table too, and a fixed cost without histories.
    #[test]
    fn length_costs_give_each_row_the_cost_of_its_history() {
        let long = MAX_COST_TABLE_LEN + 7;
        let lens: Vec<u32> = vec![0, 3, long, 2, long, 1];
        let cost = |len: usize| 10 + 2 * len as u64;
        let source = LengthCosts::new(lens.len() as u64, lens.clone().into(), cost);
        let mut out = vec![0; lens.len()];
        source.fill(0, &mut out);
        let want: Vec<u64> = lens.iter().map(|&l| cost(l as usize)).collect();
        assert_eq!(out, want);
        let index = CostIndex::from_source(Arc::new(source));
        assert_eq!(index.total(), want.iter().sum::<u64>());
        assert_eq!(index.cost(2..4), want[2] + want[3]);

        let none = CostIndex::from_source(Arc::new(LengthCosts::new(5, Arc::from([]), cost)));
        assert_eq!(none.total(), 50);
    }
}
