//! Parquet input, read by row ranges, and `gen`, the synthetic reference data.
//!
//! An input is one Parquet file, every `*.parquet` below a folder, the files
//! a glob matches, or the same in object storage ([`parts`], [`remote`]).
//! Its part files are sorted by path and read as one table: global row `r`
//! is row `r - first` of the part whose rows start at `first`. `key=value`
//! folders become columns whose value is the same for every row of a part.
//!
//! The coordinator needs two things from an input: an index (every entity's
//! id and history length, to cost and plan chunks) and, per chunk, that
//! chunk's rows in the columnar [`Rows`] the models consume. Inputs can be far
//! larger than memory, so nothing here reads a whole file at once:
//! [`Dataset::scan_index`] walks one row group at a time over the id and
//! history columns only, and [`Dataset::read_rows`] decodes only the row
//! groups that overlap the requested range, projected to the columns the job
//! uses.
//!
//! Schemas are checked once, in [`Dataset::open`], so a bad input fails before
//! any work is planned: every part must have the columns and types of the
//! first (an error names both files and the column). Values (null ids,
//! negative ids, out-of-range item ids, null features) are checked as they
//! are decoded, and every error names the part file, the column and the row
//! (0-based, within that file).
//!
//! This room does not plan, cost or score anything, and never writes to an
//! input; [`gen`](r#gen) writes only the files it is asked to create.

mod advise;
mod decode;
pub mod r#gen;
mod pages;
mod parts;
mod peek;
mod pick;
mod remote;
mod schema;
mod segment;
mod span;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;

use crate::model::{EntityIds, Rows};

pub use r#gen::{GenKind, GenOptions, GenSummary, generate};
pub use parts::{MAX_DEPTH, MAX_PARTS};

/// The longest string id, in bytes: the store's key limit (LMDB's largest
/// key). An empty id is refused too; both when the input's ids are read.
pub const MAX_ID_BYTES: usize = 511;
pub use remote::object_identity;
pub use segment::Segment;

use advise::Advice;
use decode::{PartView, invalid_in};
#[cfg(test)]
use decode::{ReadPlan, plan_read};

pub type Result<T> = std::result::Result<T, Error>;

/// Rows decoded per Arrow batch; a range is read in batches of at most this
/// many rows and appended to one [`Rows`].
pub const MAX_BATCH_ROWS: usize = 65_536;

/// The most history items one [`Rows`] can hold: its offsets are `u32`.
pub const MAX_HISTORY_ITEMS_PER_READ: u64 = u32::MAX as u64;

/// What went wrong reading (or generating) a dataset. Every variant names the
/// file (the part file, or for object storage its URL); value errors name the
/// column and the 0-based row within that file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a readable Parquet file: {source}", path.display())]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("{}: writing Parquet failed: {source}", path.display())]
    ParquetWrite {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("{}: decoding Parquet data failed: {source}", path.display())]
    Arrow {
        path: PathBuf,
        source: arrow_schema::ArrowError,
    },
    #[error(
        "{}: the {role} '{column}' is not in the file; its columns are: {}",
        path.display(),
        quoted_list(available)
    )]
    UnknownColumn {
        path: PathBuf,
        /// "id column", "history column" or "feature column".
        role: &'static str,
        column: String,
        available: Vec<String>,
    },
    #[error(
        "{}: this model needs a history column; set `history_column` in [input]",
        path.display()
    )]
    NoHistoryColumn { path: PathBuf },
    #[error(
        "{}: column '{column}' has type {found}; the {role} must be {expected}",
        path.display()
    )]
    ColumnType {
        path: PathBuf,
        column: String,
        role: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error(
        "{}: column '{column}', row {row}: the id '{shown}' is {len} bytes; a string id is 1 to {MAX_ID_BYTES} bytes (the store's key limit)",
        path.display()
    )]
    IdLength {
        path: PathBuf,
        column: String,
        row: u64,
        len: usize,
        /// The id as a message shows it (cut short, control characters
        /// escaped).
        shown: String,
    },
    #[error("{}: column '{column}', row {row}: the id is null; every row needs an id", path.display())]
    NullId {
        path: PathBuf,
        column: String,
        row: u64,
    },
    #[error(
        "{}: column '{column}', row {row}: the id {value} is negative; integer ids must be 0 or more",
        path.display()
    )]
    NegativeId {
        path: PathBuf,
        column: String,
        row: u64,
        value: i64,
    },
    #[error(
        "{}: column '{column}', row {row}: the history holds a null item id; item ids must be integers in 0..={}",
        path.display(),
        u32::MAX
    )]
    NullHistoryItem {
        path: PathBuf,
        column: String,
        row: u64,
    },
    #[error(
        "{}: column '{column}', row {row}: the history item id {value} is outside 0..={}",
        path.display(),
        u32::MAX
    )]
    HistoryItemOutOfRange {
        path: PathBuf,
        column: String,
        row: u64,
        value: i128,
    },
    #[error(
        "{}: column '{column}', row {row}: the feature is null; fill or drop nulls before scoring",
        path.display()
    )]
    NullFeature {
        path: PathBuf,
        column: String,
        row: u64,
    },
    #[error(
        "{}: column '{column}', row {row}: the feature is {what}",
        path.display()
    )]
    InvalidFeature {
        path: PathBuf,
        column: String,
        row: u64,
        /// `NaN`, `inf` or `-inf`.
        what: String,
    },
    #[error(
        "{}: rows {}..{} hold more than {} history items; read a smaller range",
        path.display(),
        range.start,
        range.end,
        MAX_HISTORY_ITEMS_PER_READ
    )]
    TooManyHistoryItems { path: PathBuf, range: Range<u64> },
    #[error(
        "{}: rows {}..{} asked for, but the file has {rows} rows",
        path.display(),
        range.start,
        range.end
    )]
    RangeOutOfBounds {
        path: PathBuf,
        range: Range<u64>,
        rows: u64,
    },
    /// A part file is not what the run was planned on (a worker reading its
    /// own rows found another row count, or other ids at the range's ends).
    #[error("{}: {message}", path.display())]
    PartChanged { path: PathBuf, message: String },
    #[error(
        "{}: rows {}..{} should hold {expected} rows but the file gave {found}",
        path.display(),
        range.start,
        range.end
    )]
    ShortRead {
        path: PathBuf,
        range: Range<u64>,
        expected: u64,
        found: u64,
    },
    #[error("{}: {source}", path.display())]
    Storage {
        /// The object's (or the input's) URL.
        path: PathBuf,
        source: Box<object_store::Error>,
    },
    #[error("{}: {message}", path.display())]
    Location { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    NoParts {
        path: PathBuf,
        message: &'static str,
    },
    #[error(
        "{}: {found} files found; an input has at most {} part files (merge small files)",
        path.display(),
        parts::MAX_PARTS
    )]
    TooManyParts { path: PathBuf, found: usize },
    #[error(
        "{}: column '{column}' {difference} {}; every part file needs the same columns and types",
        other.display(),
        first.display()
    )]
    SchemaMismatch {
        /// The first part file, whose schema the others must have.
        first: PathBuf,
        other: PathBuf,
        column: String,
        /// "is float64 here but int64 in", "is missing here but is in", ...
        difference: String,
    },
    #[error(
        "{}: its key=value folders are {} but those of {} are {}; every part file needs the same folder columns",
        other.display(),
        quoted_list(found),
        first.display(),
        quoted_list(expected)
    )]
    FolderColumns {
        first: PathBuf,
        other: PathBuf,
        found: Vec<String>,
        expected: Vec<String>,
    },
    #[error(
        "{}: '{column}' is both a key=value folder above the file and a column in it; rename one",
        path.display()
    )]
    FolderClash { path: PathBuf, column: String },
    #[error("gen: {option} = {value}: {expected}")]
    GenOption {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(
        "{}: the Parquet decoder failed on this file, which may be corrupt: {why}",
        path.display()
    )]
    DecoderPanicked { path: PathBuf, why: String },
    #[error("{}: writing the model failed: {source}", path.display())]
    Safetensors {
        path: PathBuf,
        source: safetensors::SafeTensorError,
    },
}

/// Runs `read` of part `path`. The Parquet decoder can panic on a corrupt
/// file (a page header without its body, a bit width past its buffer); such
/// a panic becomes an error naming the file, so a worker fails the attempt
/// and the coordinator the run with a message, instead of a thread dying.
/// Every read of a part goes through it: a scan's row group
/// ([`Dataset::read_group`]), a range (`PartView::read_batches`, under
/// every read of rows and segments) and scattered rows
/// (`PartView::read_at`).
fn unless_panics<T>(path: &Path, read: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown cause");
        Err(Error::DecoderPanicked {
            path: path.to_path_buf(),
            why: why.to_string(),
        })
    })
}

fn quoted_list(names: &[String]) -> String {
    if names.is_empty() {
        return "(none)".to_string();
    }
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A column the job reads: from the part files, or a `key=value` folder.
#[derive(Clone, Debug)]
struct Column {
    name: String,
    /// `Some(k)`: folder column `k` of [`Dataset::folders`].
    folder: Option<usize>,
}

/// A `key=value` folder column and the type its values all parse as.
#[derive(Clone, Debug)]
struct FolderColumn {
    name: String,
    data_type: DataType,
}

/// One folder value of one part, typed.
#[derive(Clone, Debug, PartialEq)]
enum FolderValue {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
}

/// Hive's name for a null folder value.
const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// One opened part file.
#[derive(Debug)]
struct Part {
    name: PathBuf,
    source: Source,
    metadata: ArrowReaderMetadata,
    /// `row_groups + 1` row numbers within this part.
    row_group_starts: Vec<u64>,
    /// One per folder column of the dataset.
    folder_values: Vec<FolderValue>,
    identity: String,
}

#[derive(Debug)]
enum Source {
    Local(PathBuf),
    Remote(Arc<remote::RemoteObject>),
}

/// An input (one or more Parquet part files) whose schema has been checked
/// against the job.
#[derive(Debug)]
pub struct Dataset {
    /// The input as the job names it.
    location: PathBuf,
    parts: Vec<Part>,
    folders: Vec<FolderColumn>,
    id: Column,
    /// Read only when the model needs a history.
    history: Option<Column>,
    features: Vec<Column>,
    feature_names: Vec<String>,
    /// `parts + 1` global row numbers: part `p` holds rows
    /// `part_starts[p]..part_starts[p + 1]`.
    part_starts: Vec<u64>,
    /// `row_groups + 1` global row numbers over every part's row groups in
    /// order: row group `g` holds rows `row_group_starts[g]..row_group_starts[g + 1]`.
    row_group_starts: Vec<u64>,
    /// Row groups handed to the Parquet decoder so far, over all reads.
    row_groups_decoded: AtomicU64,
    /// A null feature is read as NaN instead of failing the read (when
    /// `[input] on_invalid` is not `error`: the run found those rows first).
    /// When false, a NaN or infinite feature fails the read too: with
    /// `on_invalid = "error"` whoever reads a chunk checks its features.
    nulls_as_nan: bool,
    /// Feature buffers of rows already scored ([`Dataset::recycle`]), at
    /// most [`MAX_SPARE_BUFFERS`], for the next reads to fill: memory that
    /// is already mapped and in the cache, where a fresh buffer of a batch
    /// (megabytes) is mapped and zeroed by the kernel page by page.
    spare: Mutex<Vec<Vec<f32>>>,
}

/// At most this many feature buffers wait in [`Dataset::recycle`]'s pool: a
/// worker's reads ahead and its threads' blocks hold fewer batches at once.
const MAX_SPARE_BUFFERS: usize = 8;

/// A null, NaN or infinite feature value, found by [`Dataset::scan_invalid`].
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidValue {
    /// The 0-based input row.
    pub row: u64,
    pub column: String,
    /// `null`, `NaN`, `inf` or `-inf`.
    pub what: String,
}

/// Every entity's id and history length, in input order.
#[derive(Clone, Debug, PartialEq)]
pub struct Index {
    pub ids: EntityIds,
    /// One per row (a null history counts 0); empty when the dataset has no
    /// history column.
    pub history_lens: Arc<[u32]>,
}

/// One shard of a [`Dataset::scan_index_unless`].
struct IndexShard {
    ids: EntityIds,
    history_lens: Vec<u32>,
}

const ID_TYPES: &str = "an integer (any width) or a string (plain or dictionary-encoded)";
const HISTORY_TYPES: &str = "a list of integers (item ids in the u32 range)";
const FEATURE_TYPES: &str = "float32, float64, an integer or a boolean (converted to f32); name the feature columns in [input] feature_columns to leave it out";

impl Error {
    /// The part file, column, row within the part and what was found, of a
    /// read that failed on a null, NaN or infinite feature.
    pub fn invalid_feature(&self) -> Option<(&Path, &str, u64, String)> {
        match self {
            Error::NullFeature { path, column, row } => Some((path, column, *row, "null".into())),
            Error::InvalidFeature {
                path,
                column,
                row,
                what,
            } => Some((path, column, *row, what.clone())),
            _ => None,
        }
    }
}

impl Dataset {
    /// The input as the job names it (a file, folder, glob or URL).
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// The part files, in row order.
    pub fn part_names(&self) -> impl Iterator<Item = &Path> {
        self.parts.iter().map(|p| p.name.as_path())
    }

    pub fn num_parts(&self) -> usize {
        self.parts.len()
    }

    /// What `--resume` compares: every part's name, size and modification
    /// time (or entity tag), one line each.
    pub fn identity(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            out.push_str(&format!("{} {}\n", part.name.display(), part.identity));
        }
        out
    }

    /// Reads null features as NaN (or not), when the run decides
    /// `on_invalid` after loading the model (an ONNX graph defines missing
    /// values or does not).
    pub fn set_nulls_as_nan(&mut self, nan: bool) {
        self.nulls_as_nan = nan;
    }

    pub fn num_rows(&self) -> u64 {
        *self.part_starts.last().unwrap_or(&0)
    }

    pub fn num_row_groups(&self) -> usize {
        self.row_group_starts.len() - 1
    }

    /// `num_row_groups() + 1` global row numbers: row group `g` (counting
    /// every part's row groups in order) holds rows `starts[g]..starts[g + 1]`.
    /// Ranges that follow these boundaries decode no row twice, and never
    /// span two parts.
    pub fn row_group_starts(&self) -> &[u64] {
        &self.row_group_starts
    }

    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    pub fn num_features(&self) -> usize {
        self.features.len()
    }

    pub fn has_history(&self) -> bool {
        self.history.is_some()
    }

    /// Row groups handed to the Parquet decoder so far, over every read of
    /// this dataset.
    pub fn row_groups_decoded(&self) -> u64 {
        self.row_groups_decoded.load(Ordering::Relaxed)
    }

    /// Reads only the id and history columns, one row group at a time.
    pub fn scan_index(&self) -> Result<Index> {
        let never = std::sync::atomic::AtomicBool::new(false);
        Ok(self
            .scan_index_unless(&never)?
            .expect("a scan nobody stops ends with the index"))
    }

    /// [`Dataset::scan_index`], which gives up (`None`) at the next row
    /// group once `stop` is set. The row groups are scanned in contiguous
    /// shards on this machine's cores and the shards joined in row order;
    /// an error is the first in row order.
    pub fn scan_index_unless(&self, stop: &std::sync::atomic::AtomicBool) -> Result<Option<Index>> {
        let shards = self.in_shards(|shard| self.scan_index_groups(shard, stop));
        // The first shard's vectors have room for every row (see
        // `scan_index_groups`): the others are moved in after its own,
        // which are never copied.
        let mut joined: Option<IndexShard> = None;
        for shard in shards {
            let Some(shard) = shard? else {
                return Ok(None);
            };
            let Some(all) = joined.as_mut() else {
                joined = Some(shard);
                continue;
            };
            match (&mut all.ids, shard.ids) {
                (EntityIds::Int(all), EntityIds::Int(some)) => all.extend(some),
                (EntityIds::Str(all), EntityIds::Str(some)) => all.extend(some),
                _ => unreachable!("every shard starts from empty_ids"),
            }
            all.history_lens.extend(shard.history_lens);
        }
        let IndexShard { ids, history_lens } = joined.unwrap_or_else(|| IndexShard {
            ids: self.empty_ids(),
            history_lens: Vec::new(),
        });
        Ok(Some(Index {
            ids,
            history_lens: history_lens.into(),
        }))
    }

    /// `scan` of every row group of the input ((part, group) pairs), in
    /// contiguous shards in row order, one shard per core (at most one per
    /// row group), each on a thread of its own; the shards' results in row
    /// order.
    fn in_shards<T: Send>(&self, scan: impl Fn(&[(usize, usize)]) -> T + Sync) -> Vec<T> {
        let groups: Vec<(usize, usize)> = (self.parts.iter().enumerate())
            .flat_map(|(p, part)| (0..part.num_row_groups()).map(move |g| (p, g)))
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, groups.len().max(1));
        let per = groups.len().div_ceil(threads).max(1);
        let scan = &scan;
        std::thread::scope(|s| {
            let handles: Vec<_> = groups
                .chunks(per)
                .map(|shard| s.spawn(move || scan(shard)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("an input scan thread panicked"))
                .collect()
        })
    }

    /// [`Dataset::scan_index_unless`] over row groups `groups` ((part,
    /// group) pairs, in row order).
    fn scan_index_groups(
        &self,
        groups: &[(usize, usize)],
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<Option<IndexShard>> {
        // Room for the shard's rows, or for every row in the first shard,
        // whose vectors become the index's: none grows by copying itself.
        let rows = match groups.first() {
            Some(&(0, 0)) => self.num_rows(),
            _ => groups
                .iter()
                .map(|&(p, g)| {
                    let starts = &self.parts[p].row_group_starts;
                    starts[g + 1] - starts[g]
                })
                .sum(),
        } as usize;
        let mut out = IndexShard {
            ids: self.empty_ids(),
            history_lens: Vec::with_capacity(match self.history {
                Some(_) => rows,
                None => 0,
            }),
        };
        match &mut out.ids {
            EntityIds::Int(v) => v.reserve_exact(rows),
            EntityIds::Str(v) => v.reserve_exact(rows),
        }
        let (mut offsets, mut items) = (Vec::new(), Vec::new());
        let mut columns = vec![&self.id];
        columns.extend(self.history.iter());
        let mut advice = None;
        for (i, &group) in groups.iter().enumerate() {
            self.advise_scan(&mut advice, &groups[i..], &columns)?;
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(None);
            }
            self.read_group(group, &columns, |view, batch, row| {
                view.append_ids(&mut out.ids, batch, row)?;
                if let Some(history) = &self.history {
                    offsets.clear();
                    offsets.push(0);
                    items.clear();
                    view.append_history(history, &mut offsets, &mut items, batch, row)?;
                    out.history_lens
                        .extend(offsets.windows(2).map(|w| w[1] - w[0]));
                }
                Ok(true)
            })?;
        }
        Ok(Some(out))
    }

    /// Every null, NaN or infinite value of the feature columns, by input
    /// row (ascending), reading one row group at a time and only the feature
    /// columns; stops after the first when `first_only`.
    pub fn scan_invalid(&self, first_only: bool) -> Result<Vec<InvalidValue>> {
        if self.features.is_empty() {
            return Ok(Vec::new());
        }
        // The shards' findings joined in row order.
        let shards = self.in_shards(|shard| self.scan_groups(shard, first_only));
        let mut found = Vec::new();
        for shard in shards {
            found.extend(shard?);
            if first_only && !found.is_empty() {
                found.truncate(1);
                break;
            }
        }
        Ok(found)
    }

    /// [`Dataset::scan_invalid`] over row groups `groups` ((part, group)
    /// pairs, in row order).
    fn scan_groups(
        &self,
        groups: &[(usize, usize)],
        first_only: bool,
    ) -> Result<Vec<InvalidValue>> {
        let mut found = Vec::new();
        let columns: Vec<&Column> = self.features.iter().collect();
        let mut advice = None;
        for (i, &(p, group)) in groups.iter().enumerate() {
            self.advise_scan(&mut advice, &groups[i..], &columns)?;
            let first = self.part_starts[p];
            let whole = self.read_group((p, group), &columns, |view, batch, row| {
                let mut here = Vec::new();
                for column in &self.features {
                    let array = view.column(batch, column)?;
                    invalid_in(array.as_ref(), |i, what| {
                        here.push(InvalidValue {
                            row: first + row + i as u64,
                            column: column.name.clone(),
                            what,
                        })
                    });
                }
                here.sort_by_key(|v| v.row);
                found.extend(here);
                Ok(!first_only || found.is_empty())
            })?;
            if !whole {
                found.truncate(1);
                return Ok(found);
            }
        }
        Ok(found)
    }

    /// Before a scan reads `columns` of `rest[0]`, the first of the row
    /// groups it has left ((part, group) pairs, in row order): asks for its
    /// bytes and a window after them, one [`Advice`] a part, made when the
    /// scan comes to it (over the part's groups, those at the front of
    /// `rest`).
    fn advise_scan(
        &self,
        advice: &mut Option<(usize, Advice)>,
        rest: &[(usize, usize)],
        columns: &[&Column],
    ) -> Result<()> {
        let Some(&(p, g)) = rest.first() else {
            return Ok(());
        };
        let part = &self.parts[p];
        if advice.as_ref().is_none_or(|(q, _)| *q != p) {
            let view = PartView { part, ds: self };
            let here: Vec<usize> = rest.iter().take_while(|x| x.0 == p).map(|x| x.1).collect();
            *advice = Some((p, Advice::new(&view, &here, &view.projection(columns)?)));
        }
        if let Some((_, a)) = advice {
            a.at_row(part.row_group_starts[g]);
        }
        Ok(())
    }

    /// Row group `group` ((part, group)) read for `columns`, handed to
    /// `each` batch by batch with the part's view and the batch's first row
    /// (the part's numbering); stops when `each` returns false (then
    /// `Ok(false)`). A group holding other than the rows its footer gives
    /// is an error naming the part.
    fn read_group(
        &self,
        (p, group): (usize, usize),
        columns: &[&Column],
        mut each: impl FnMut(&PartView<'_>, &arrow_array::RecordBatch, u64) -> Result<bool>,
    ) -> Result<bool> {
        let part = &self.parts[p];
        let view = PartView { part, ds: self };
        unless_panics(&part.name, || {
            let projection = view.projection(columns)?;
            let start = part.row_group_starts[group];
            let rows = part.row_group_starts[group + 1] - start;
            let reader = view.reader(vec![group], &projection, None, rows)?;
            let mut row = start;
            for batch in reader {
                let batch = batch.map_err(|source| view.arrow_error(source))?;
                if !each(&view, &batch, row)? {
                    return Ok(false);
                }
                row += batch.num_rows() as u64;
            }
            if row != start + rows {
                return Err(view.short_read(start..start + rows, row - start));
            }
            Ok(true)
        })
    }

    /// The part file holding input row `row`, and the row's number within it.
    pub fn locate(&self, row: u64) -> (&Path, u64) {
        let p = self.part_starts[1..]
            .partition_point(|&end| end <= row)
            .min(self.parts.len() - 1);
        (&self.parts[p].name, row - self.part_starts[p])
    }

    /// The rows at input row numbers `at` (ascending, no repeats), in that
    /// order: in each part, only the row groups holding them are decoded,
    /// and only those rows selected from them.
    pub fn read_rows_at(&self, at: &[u64]) -> Result<Rows> {
        self.rows_at(at, None)
    }

    /// [`Dataset::read_rows_at`] for a reader that knows the rows' ids
    /// already (`ids`, row `at[i]`'s at `i`, from the input's index): their
    /// column is not read. Where the features are picked from their pages
    /// and there is no history, nothing is decoded through Arrow at all.
    pub fn read_rows_at_with_ids(&self, at: &[u64], ids: EntityIds) -> Result<Rows> {
        assert_eq!(ids.len(), at.len(), "one id a row");
        self.rows_at(at, Some(ids))
    }

    fn rows_at(&self, at: &[u64], ids: Option<EntityIds>) -> Result<Rows> {
        let read_ids = ids.is_none();
        let mut out = self.empty_rows(at.len());
        if let Some(ids) = ids {
            out.ids = ids;
        }
        if let Some(&last) = at.last()
            && last >= self.num_rows()
        {
            return Err(Error::RangeOutOfBounds {
                path: self.location.clone(),
                range: last..last + 1,
                rows: self.num_rows(),
            });
        }
        let mut done = 0usize;
        while done < at.len() {
            let p = self.part_starts[1..].partition_point(|&end| end <= at[done]);
            let (lo, hi) = (self.part_starts[p], self.part_starts[p + 1]);
            let n = at[done..].partition_point(|&r| r < hi);
            let local: Vec<u64> = at[done..done + n].iter().map(|r| r - lo).collect();
            let view = PartView {
                part: &self.parts[p],
                ds: self,
            };
            view.read_at(&local, &mut out, done, read_ids)?;
            done += n;
        }
        Ok(out)
    }

    /// Rows `range` (global row numbers): reads only the row groups that
    /// overlap it, in each part it spans, projected to the needed columns,
    /// sliced to the range.
    pub fn read_rows(&self, range: Range<u64>) -> Result<Rows> {
        if range.start > range.end || range.end > self.num_rows() {
            return Err(Error::RangeOutOfBounds {
                path: self.location.clone(),
                range,
                rows: self.num_rows(),
            });
        }
        let mut out = self.empty_rows((range.end - range.start) as usize);
        let mut done = 0u64;
        let first = self.part_starts[1..].partition_point(|&end| end <= range.start);
        for (p, part) in self.parts.iter().enumerate().skip(first) {
            let (lo, hi) = (self.part_starts[p], self.part_starts[p + 1]);
            if lo >= range.end {
                break;
            }
            let local = range.start.max(lo) - lo..range.end.min(hi) - lo;
            if local.is_empty() {
                continue;
            }
            PartView { part, ds: self }.read_into(local.clone(), &mut out, done)?;
            done += local.end - local.start;
        }
        Ok(out)
    }

    /// Gives back rows that were read from this dataset and are done with:
    /// the next read fills their feature buffer instead of a fresh one.
    pub fn recycle(&self, rows: Rows) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < MAX_SPARE_BUFFERS && rows.features.capacity() > 0 {
            spare.push(rows.features);
        }
    }

    /// Rows with room for `n` rows' features and no ids or history yet, for
    /// a read to fill. A recycled buffer keeps the values it held (no pass
    /// to zero it): every read writes each feature of each of its rows, or
    /// fails. Debug builds fill the room with NaN, so that a read that left a
    /// value out fails every test that reads through it.
    fn empty_rows(&self, n: usize) -> Rows {
        let num_features = self.features.len();
        let len = n * num_features;
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut features = match spare {
            Some(mut buffer) => {
                buffer.truncate(len);
                buffer.resize(len, 0.0);
                buffer
            }
            None => vec![0f32; len],
        };
        if cfg!(debug_assertions) {
            features.fill(f32::NAN);
        }
        Rows {
            ids: self.empty_ids(),
            num_features,
            features,
            history_offsets: if self.history.is_some() {
                vec![0]
            } else {
                Vec::new()
            },
            history_items: Vec::new(),
        }
    }

    fn empty_ids(&self) -> EntityIds {
        let integer = match self.id.folder {
            Some(k) => self.folders[k].data_type.is_integer(),
            None => self.parts[0]
                .metadata
                .schema()
                .field_with_name(&self.id.name)
                .is_ok_and(|f| f.data_type().is_integer()),
        };
        if integer {
            EntityIds::Int(Vec::new())
        } else {
            EntityIds::Str(Vec::new())
        }
    }
}

impl Part {
    fn num_rows(&self) -> u64 {
        *self.row_group_starts.last().unwrap_or(&0)
    }

    fn num_row_groups(&self) -> usize {
        self.row_group_starts.len() - 1
    }
}

#[cfg(test)]
mod parts_tests;
#[cfg(test)]
mod tests;
