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

pub mod r#gen;
mod parts;
mod remote;
mod segment;

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, Float64Array, GenericListArray, Int64Array, OffsetSizeTrait, RecordBatch,
    StringArray,
};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::reader::ChunkReader;

use crate::model::{EntityIds, Rows};

pub use r#gen::{GenKind, GenOptions, GenSummary, generate};
pub use parts::{MAX_DEPTH, MAX_PARTS};
pub use segment::Segment;

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
    #[error("{}: writing the model failed: {source}", path.display())]
    Safetensors {
        path: PathBuf,
        source: safetensors::SafeTensorError,
    },
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
    nulls_as_nan: bool,
}

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

const ID_TYPES: &str = "an integer (any width) or a string";
const HISTORY_TYPES: &str = "a list of integers (item ids in the u32 range)";
const FEATURE_TYPES: &str = "float32, float64, an integer or a boolean (converted to f32); name the feature columns in [input] feature_columns to leave it out";

impl Dataset {
    /// Finds the input's part files, opens each and checks the schema
    /// against `input`: every part has the first part's columns and types
    /// and the same `key=value` folders; the id column must be an integer
    /// (any int width; negative values are an error naming the row) or a
    /// string; the history column (required when `needs_history`) a list of
    /// integers (u32 range); features float32 / float64 / int / bool
    /// (converted to f32; true is 1.0). `feature_columns` `None` = every
    /// column of the files but the id and history columns, in file order
    /// (folder columns only when named). Unknown column names: an error
    /// listing the columns the input has. A history column that is named but
    /// not needed is checked, then left unread.
    pub fn open(input: &crate::config::Input, needs_history: bool) -> Result<Dataset> {
        let location = PathBuf::from(input.path.to_string());
        let found = parts::find(&input.path, &input.storage)?;
        let parts = open_parts(found)?;
        let (folders, parts) = type_folders(parts)?;
        let first = &parts[0];
        let schema = first.metadata.schema().clone();
        for part in &parts[1..] {
            same_schema(first, part)?;
        }
        for folder in &folders {
            if schema.field_with_name(&folder.name).is_ok() {
                return Err(Error::FolderClash {
                    path: first.name.clone(),
                    column: folder.name.clone(),
                });
            }
        }

        let mut available: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        available.extend(folders.iter().map(|f| f.name.clone()));
        let data_type = |column: &Column| match column.folder {
            Some(k) => folders[k].data_type.clone(),
            None => schema
                .field_with_name(&column.name)
                .map(|f| f.data_type().clone())
                .unwrap_or(DataType::Null),
        };
        let find = |name: &str, role: &'static str| -> Result<Column> {
            if schema.field_with_name(name).is_ok() {
                return Ok(Column {
                    name: name.to_string(),
                    folder: None,
                });
            }
            match folders.iter().position(|f| f.name == name) {
                Some(k) => Ok(Column {
                    name: name.to_string(),
                    folder: Some(k),
                }),
                None => Err(Error::UnknownColumn {
                    path: location.clone(),
                    role,
                    column: name.to_string(),
                    available: available.clone(),
                }),
            }
        };
        let type_error =
            |column: &Column, role: &'static str, expected: &'static str| Error::ColumnType {
                path: location.clone(),
                column: column.name.clone(),
                role,
                found: data_type(column).to_string(),
                expected,
            };

        let id = find(&input.id_column, "id column")?;
        if !is_id_type(&data_type(&id)) {
            return Err(type_error(&id, "id column", ID_TYPES));
        }

        let history = match (&input.history_column, needs_history) {
            (None, true) => return Err(Error::NoHistoryColumn { path: location }),
            (None, false) => None,
            (Some(name), _) => {
                let column = find(name, "history column")?;
                if !is_history_type(&data_type(&column)) {
                    return Err(type_error(&column, "history column", HISTORY_TYPES));
                }
                needs_history.then_some(column)
            }
        };

        let features: Vec<Column> = match &input.feature_columns {
            Some(names) => names
                .iter()
                .map(|n| find(n, "feature column"))
                .collect::<Result<_>>()?,
            None => schema
                .fields()
                .iter()
                .map(|f| f.name())
                .filter(|n| **n != input.id_column && Some(*n) != input.history_column.as_ref())
                .map(|name| Column {
                    name: name.clone(),
                    folder: None,
                })
                .collect(),
        };
        for column in &features {
            if !is_feature_type(&data_type(column)) {
                return Err(type_error(column, "feature column", FEATURE_TYPES));
            }
        }
        let feature_names = features.iter().map(|c| c.name.clone()).collect();

        let mut part_starts = vec![0u64];
        let mut row_group_starts = vec![0u64];
        for part in &parts {
            let first = *part_starts.last().unwrap_or(&0);
            row_group_starts.extend(part.row_group_starts[1..].iter().map(|r| first + r));
            part_starts.push(first + part.num_rows());
        }

        Ok(Dataset {
            location,
            parts,
            folders,
            id,
            history,
            features,
            feature_names,
            part_starts,
            row_group_starts,
            row_groups_decoded: AtomicU64::new(0),
            nulls_as_nan: input.on_invalid != crate::config::OnInvalid::Error,
        })
    }

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
        let mut ids = self.empty_ids();
        let mut history_lens = Vec::new();
        let mut offsets = Vec::new();
        let mut items = Vec::new();
        let mut columns = vec![&self.id];
        columns.extend(self.history.iter());
        for part in &self.parts {
            let view = PartView { part, ds: self };
            let projection = view.projection(&columns)?;
            for group in 0..part.num_row_groups() {
                let start = part.row_group_starts[group];
                let rows = part.row_group_starts[group + 1] - start;
                let reader = view.reader(vec![group], &projection, None, rows)?;
                let mut row = start;
                for batch in reader {
                    let batch = batch.map_err(|source| view.arrow_error(source))?;
                    view.append_ids(&mut ids, &batch, row)?;
                    if let Some(history) = &self.history {
                        offsets.clear();
                        offsets.push(0);
                        items.clear();
                        view.append_history(history, &mut offsets, &mut items, &batch, row)?;
                        history_lens.extend(offsets.windows(2).map(|w| w[1] - w[0]));
                    }
                    row += batch.num_rows() as u64;
                }
                if row != start + rows {
                    return Err(view.short_read(start..start + rows, row - start));
                }
            }
        }
        Ok(Index {
            ids,
            history_lens: history_lens.into(),
        })
    }

    /// Every null, NaN or infinite value of the feature columns, by input
    /// row (ascending), reading one row group at a time and only the feature
    /// columns; stops after the first when `first_only`.
    pub fn scan_invalid(&self, first_only: bool) -> Result<Vec<InvalidValue>> {
        let mut found = Vec::new();
        if self.features.is_empty() {
            return Ok(found);
        }
        let columns: Vec<&Column> = self.features.iter().collect();
        for (p, part) in self.parts.iter().enumerate() {
            let view = PartView { part, ds: self };
            let projection = view.projection(&columns)?;
            let first = self.part_starts[p];
            for group in 0..part.num_row_groups() {
                let start = part.row_group_starts[group];
                let rows = part.row_group_starts[group + 1] - start;
                let reader = view.reader(vec![group], &projection, None, rows)?;
                let mut row = start;
                for batch in reader {
                    let batch = batch.map_err(|source| view.arrow_error(source))?;
                    let mut here = Vec::new();
                    for column in &self.features {
                        let array = view.column(&batch, column)?;
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
                    if first_only && !found.is_empty() {
                        found.truncate(1);
                        return Ok(found);
                    }
                    row += batch.num_rows() as u64;
                }
            }
        }
        Ok(found)
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
        let num_features = self.features.len();
        let mut out = Rows {
            ids: self.empty_ids(),
            num_features,
            features: vec![0f32; at.len() * num_features],
            history_offsets: Vec::new(),
            history_items: Vec::new(),
        };
        if self.history.is_some() {
            out.history_offsets.push(0);
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
            PartView {
                part: &self.parts[p],
                ds: self,
            }
            .read_at(&local, &mut out, done)?;
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
        let expected = range.end - range.start;
        let num_features = self.features.len();
        let mut out = Rows {
            ids: self.empty_ids(),
            num_features,
            features: vec![0f32; expected as usize * num_features],
            history_offsets: Vec::new(),
            history_items: Vec::new(),
        };
        if self.history.is_some() {
            out.history_offsets.push(0);
        }
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

/// A part and its raw `key=value` folders, before the folder values are typed.
type Untyped = (Part, Vec<(String, String)>);

/// Opens every part's footer: local files one by one, remote objects with
/// their footers fetched concurrently.
fn open_parts(found: Vec<parts::PartRef>) -> Result<Vec<Untyped>> {
    let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
    let remote: Vec<Arc<remote::RemoteObject>> = found
        .iter()
        .filter_map(|r| match &r.source {
            parts::PartSource::Remote(o) => Some(o.clone()),
            parts::PartSource::Local(_) => None,
        })
        .collect();
    let mut footers = remote::footers(remote).into_iter();
    let mut out = Vec::with_capacity(found.len());
    for r in found {
        let parquet_error = |source| Error::Parquet {
            path: r.name.clone(),
            source,
        };
        let (source, metadata) = match r.source {
            parts::PartSource::Local(path) => {
                let file = File::open(&path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                let metadata =
                    ArrowReaderMetadata::load(&file, options.clone()).map_err(parquet_error)?;
                (Source::Local(path), metadata)
            }
            parts::PartSource::Remote(object) => {
                let footer = footers.next().expect("one footer per remote part")?;
                let metadata =
                    ArrowReaderMetadata::load(&footer, options.clone()).map_err(parquet_error)?;
                (Source::Remote(object), metadata)
            }
        };
        let mut row_group_starts = vec![0u64];
        for group in metadata.metadata().row_groups() {
            let last = *row_group_starts.last().unwrap_or(&0);
            row_group_starts.push(last + group.num_rows().max(0) as u64);
        }
        out.push((
            Part {
                name: r.name,
                source,
                metadata,
                row_group_starts,
                folder_values: Vec::new(),
                identity: r.identity,
            },
            r.folders,
        ));
    }
    Ok(out)
}

/// Checks that every part has the same `key=value` folders (names, in
/// order) and types each folder column: integers when every value is one,
/// else floats when every value is one, else strings.
fn type_folders(parts: Vec<Untyped>) -> Result<(Vec<FolderColumn>, Vec<Part>)> {
    let names = |f: &[(String, String)]| f.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    let expected = names(&parts[0].1);
    for (part, folders) in &parts[1..] {
        let found = names(folders);
        if found != expected {
            return Err(Error::FolderColumns {
                first: parts[0].0.name.clone(),
                other: part.name.clone(),
                found,
                expected,
            });
        }
    }
    let folders: Vec<FolderColumn> = expected
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let values = || {
                parts
                    .iter()
                    .map(move |(_, f)| f[k].1.as_str())
                    .filter(|v| *v != HIVE_NULL)
            };
            let data_type = if values().all(|v| v.parse::<i64>().is_ok()) {
                DataType::Int64
            } else if values().all(|v| v.parse::<f64>().is_ok()) {
                DataType::Float64
            } else {
                DataType::Utf8
            };
            FolderColumn {
                name: name.clone(),
                data_type,
            }
        })
        .collect();
    let parts = parts
        .into_iter()
        .map(|(mut part, raw)| {
            part.folder_values = raw
                .into_iter()
                .zip(&folders)
                .map(|((_, v), column)| match (&column.data_type, v.as_str()) {
                    (_, HIVE_NULL) => FolderValue::Null,
                    (DataType::Int64, v) => v.parse().map_or(FolderValue::Null, FolderValue::Int),
                    (DataType::Float64, v) => {
                        v.parse().map_or(FolderValue::Null, FolderValue::Float)
                    }
                    _ => FolderValue::Str(v),
                })
                .collect();
            part
        })
        .collect();
    Ok((folders, parts))
}

/// Every part must have the first part's columns with the same types (in
/// any order; nullability and nested field names aside).
fn same_schema(first: &Part, other: &Part) -> Result<()> {
    let (a, b) = (first.metadata.schema(), other.metadata.schema());
    let mismatch = |column: &str, difference: String| {
        Err(Error::SchemaMismatch {
            first: first.name.clone(),
            other: other.name.clone(),
            column: column.to_string(),
            difference,
        })
    };
    for f in a.fields() {
        match b.field_with_name(f.name()) {
            Err(_) => return mismatch(f.name(), "is missing here but is in".into()),
            Ok(g) if !g.data_type().equals_datatype(f.data_type()) => {
                return mismatch(
                    f.name(),
                    format!("is {} here but {} in", g.data_type(), f.data_type()),
                );
            }
            Ok(_) => {}
        }
    }
    for g in b.fields() {
        if a.field_with_name(g.name()).is_err() {
            return mismatch(g.name(), "is here but not in".into());
        }
    }
    Ok(())
}

/// A folder value as a column of `rows` equal values.
fn folder_array(value: &FolderValue, data_type: &DataType, rows: usize) -> ArrayRef {
    match value {
        FolderValue::Null => arrow_array::new_null_array(data_type, rows),
        FolderValue::Int(v) => Arc::new(Int64Array::from_value(*v, rows)),
        FolderValue::Float(v) => Arc::new(Float64Array::from_value(*v, rows)),
        FolderValue::Str(s) => {
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(s, rows)))
        }
    }
}

/// Byte ranges of the column chunks of `columns` (root columns) in
/// `row_groups`: what a read of them decodes.
fn column_ranges(
    metadata: &ArrowReaderMetadata,
    row_groups: &[usize],
    columns: &[usize],
) -> Vec<Range<u64>> {
    let meta = metadata.metadata();
    let schema = meta.file_metadata().schema_descr();
    let mut out = Vec::new();
    for &group in row_groups {
        for (leaf, chunk) in meta.row_group(group).columns().iter().enumerate() {
            if columns.contains(&schema.get_column_root_idx(leaf)) {
                let (start, len) = chunk.byte_range();
                out.push(start..start + len);
            }
        }
    }
    out
}

fn build_reader<T: ChunkReader + 'static>(
    reader: T,
    metadata: &ArrowReaderMetadata,
    row_groups: Vec<usize>,
    columns: &[usize],
    selection: Option<RowSelection>,
    rows: u64,
) -> parquet::errors::Result<ParquetRecordBatchReader> {
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(reader, metadata.clone());
    let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
    let batch_size = (rows as usize).clamp(1, MAX_BATCH_ROWS);
    let mut builder = builder
        .with_row_groups(row_groups)
        .with_projection(mask)
        .with_batch_size(batch_size);
    if let Some(selection) = selection {
        builder = builder.with_row_selection(selection);
    }
    builder.build()
}

/// Reading one part: every error names the part file and rows within it.
struct PartView<'a> {
    part: &'a Part,
    ds: &'a Dataset,
}

impl PartView<'_> {
    fn path(&self) -> PathBuf {
        self.part.name.clone()
    }

    /// The part's root column indices of the file columns among `columns`.
    fn projection(&self, columns: &[&Column]) -> Result<Vec<usize>> {
        let schema = self.part.metadata.schema();
        columns
            .iter()
            .filter(|c| c.folder.is_none())
            .map(|c| {
                schema.index_of(&c.name).map_err(|_| Error::UnknownColumn {
                    path: self.path(),
                    role: "column",
                    column: c.name.clone(),
                    available: schema.fields().iter().map(|f| f.name().clone()).collect(),
                })
            })
            .collect()
    }

    fn reader(
        &self,
        row_groups: Vec<usize>,
        columns: &[usize],
        selection: Option<RowSelection>,
        rows: u64,
    ) -> Result<ParquetRecordBatchReader> {
        self.ds
            .row_groups_decoded
            .fetch_add(row_groups.len() as u64, Ordering::Relaxed);
        let parquet_error = |source| Error::Parquet {
            path: self.path(),
            source,
        };
        let metadata = &self.part.metadata;
        match &self.part.source {
            Source::Local(path) => {
                let file = File::open(path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                build_reader(file, metadata, row_groups, columns, selection, rows)
                    .map_err(parquet_error)
            }
            Source::Remote(object) => {
                let held = object.prefetch(column_ranges(metadata, &row_groups, columns))?;
                build_reader(held, metadata, row_groups, columns, selection, rows)
                    .map_err(parquet_error)
            }
        }
    }

    /// This part's rows `at` (its own row numbers, ascending) into `out`,
    /// whose first `done` rows are already filled.
    fn read_at(&self, at: &[u64], out: &mut Rows, done: usize) -> Result<()> {
        let starts = &self.part.row_group_starts;
        let mut groups = Vec::new();
        let mut selectors = Vec::new();
        let mut i = 0;
        while i < at.len() {
            let g = starts[1..].partition_point(|&end| end <= at[i]);
            let (start, end) = (starts[g], starts[g + 1]);
            groups.push(g);
            let mut cursor = start;
            while i < at.len() && at[i] < end {
                selectors.push(RowSelector::skip((at[i] - cursor) as usize));
                selectors.push(RowSelector::select(1));
                cursor = at[i] + 1;
                i += 1;
            }
            selectors.push(RowSelector::skip((end - cursor) as usize));
        }
        let mut columns = vec![&self.ds.id];
        columns.extend(self.ds.history.iter());
        columns.extend(self.ds.features.iter());
        let projection = self.projection(&columns)?;
        // One row a batch, so every error names its exact row.
        let reader = self.reader(groups, &projection, Some(RowSelection::from(selectors)), 1)?;
        let nf = out.num_features;
        let mut k = 0usize;
        for batch in reader {
            let batch = batch.map_err(|source| self.arrow_error(source))?;
            let n = batch.num_rows();
            if k + n > at.len() {
                return Err(self.short_read(at[0]..at[at.len() - 1] + 1, (k + n) as u64));
            }
            let row = at[k];
            self.append_ids(&mut out.ids, &batch, row)?;
            if let Some(history) = &self.ds.history {
                self.append_history(
                    history,
                    &mut out.history_offsets,
                    &mut out.history_items,
                    &batch,
                    row,
                )?;
            }
            let dst = &mut out.features[(done + k) * nf..(done + k + n) * nf];
            for (j, column) in self.ds.features.iter().enumerate() {
                self.fill_feature(column, j, nf, dst, &batch, row)?;
            }
            k += n;
        }
        if k != at.len() {
            return Err(self.short_read(0..at.len() as u64, k as u64));
        }
        Ok(())
    }

    /// Rows `range` of this part (its own row numbers) into `out`, whose
    /// first `done` rows are already filled.
    fn read_into(&self, range: Range<u64>, out: &mut Rows, done: u64) -> Result<()> {
        let ds = self.ds;
        let expected = range.end - range.start;
        let plan = plan_read(&self.part.row_group_starts, &range);
        let mut columns = vec![&ds.id];
        columns.extend(ds.history.iter());
        columns.extend(ds.features.iter());
        let projection = self.projection(&columns)?;
        let selection = RowSelection::from(vec![
            RowSelector::skip(plan.skip as usize),
            RowSelector::select(expected as usize),
        ]);
        let reader = self.reader(plan.row_groups, &projection, Some(selection), expected)?;

        let num_features = out.num_features;
        let mut read = 0u64;
        for batch in reader {
            let batch = batch.map_err(|source| self.arrow_error(source))?;
            let first_row = range.start + read;
            let n = batch.num_rows() as u64;
            if read + n > expected {
                return Err(self.short_read(range.clone(), read + n));
            }
            self.append_ids(&mut out.ids, &batch, first_row)?;
            if let Some(history) = &ds.history {
                self.append_history(
                    history,
                    &mut out.history_offsets,
                    &mut out.history_items,
                    &batch,
                    first_row,
                )
                .map_err(|e| match e {
                    Error::TooManyHistoryItems { path, .. } => Error::TooManyHistoryItems {
                        path,
                        range: range.clone(),
                    },
                    other => other,
                })?;
            }
            let (a, b) = ((done + read) as usize, (done + read + n) as usize);
            let slice = &mut out.features[a * num_features..b * num_features];
            for (j, column) in ds.features.iter().enumerate() {
                self.fill_feature(column, j, num_features, slice, &batch, first_row)?;
            }
            read += n;
        }
        if read != expected {
            return Err(self.short_read(range, read));
        }
        Ok(())
    }

    fn column(&self, batch: &RecordBatch, column: &Column) -> Result<ArrayRef> {
        if let Some(k) = column.folder {
            return Ok(folder_array(
                &self.part.folder_values[k],
                &self.ds.folders[k].data_type,
                batch.num_rows(),
            ));
        }
        batch
            .column_by_name(&column.name)
            .cloned()
            .ok_or_else(|| Error::UnknownColumn {
                path: self.path(),
                role: "column",
                column: column.name.clone(),
                available: batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            })
    }

    fn append_ids(&self, ids: &mut EntityIds, batch: &RecordBatch, first_row: u64) -> Result<()> {
        let id = &self.ds.id;
        let array = self.column(batch, id)?;
        let array = array.as_ref();
        let null = |i: usize| Error::NullId {
            path: self.path(),
            column: id.name.clone(),
            row: first_row + i as u64,
        };
        match ids {
            EntityIds::Int(out) => {
                let visited = visit_ints(array, |i, v| match v {
                    None => Err(null(i)),
                    Some(v) if v < 0 => Err(Error::NegativeId {
                        path: self.path(),
                        column: id.name.clone(),
                        row: first_row + i as u64,
                        value: v as i64,
                    }),
                    Some(v) => {
                        out.push(v as u64);
                        Ok(())
                    }
                });
                visited.unwrap_or_else(|| Err(self.found_type(id, array, "id column", ID_TYPES)))
            }
            EntityIds::Str(out) => {
                let mut push = |i: usize, v: Option<&str>| match v {
                    None => Err(null(i)),
                    Some(s) => {
                        out.push(s.to_string());
                        Ok(())
                    }
                };
                if let Some(a) = array.as_string_opt::<i32>() {
                    a.iter().enumerate().try_for_each(|(i, v)| push(i, v))
                } else if let Some(a) = array.as_string_opt::<i64>() {
                    a.iter().enumerate().try_for_each(|(i, v)| push(i, v))
                } else if let Some(a) = array.as_string_view_opt() {
                    a.iter().enumerate().try_for_each(|(i, v)| push(i, v))
                } else {
                    Err(self.found_type(id, array, "id column", ID_TYPES))
                }
            }
        }
    }

    fn append_history(
        &self,
        column: &Column,
        offsets: &mut Vec<u32>,
        items: &mut Vec<u32>,
        batch: &RecordBatch,
        first_row: u64,
    ) -> Result<()> {
        let array = self.column(batch, column)?;
        let array = array.as_ref();
        if let Some(list) = array.as_list_opt::<i32>() {
            self.append_list(column, list, offsets, items, first_row)
        } else if let Some(list) = array.as_list_opt::<i64>() {
            self.append_list(column, list, offsets, items, first_row)
        } else {
            Err(self.found_type(column, array, "history column", HISTORY_TYPES))
        }
    }
    fn append_list<O: OffsetSizeTrait>(
        &self,
        column: &Column,
        list: &GenericListArray<O>,
        offsets: &mut Vec<u32>,
        items: &mut Vec<u32>,
        first_row: u64,
    ) -> Result<()> {
        let value_offsets = list.value_offsets();
        let (lo, hi) = (
            value_offsets[0].as_usize(),
            value_offsets[list.len()].as_usize(),
        );
        let values = list.values().slice(lo, hi - lo);
        let mut converted = Vec::with_capacity(hi - lo);
        // The first value that is not a u32 item id: (index into `values`, value).
        let mut bad: Option<(usize, Option<i128>)> = None;
        let visited = visit_ints(values.as_ref(), |k, v| {
            match v {
                Some(x) if (0..=u32::MAX as i128).contains(&x) => converted.push(x as u32),
                other => {
                    bad.get_or_insert((k, other));
                    converted.push(0);
                }
            }
            Ok(())
        });
        match visited {
            Some(result) => result?,
            None => return Err(self.found_type(column, list, "history column", HISTORY_TYPES)),
        }
        if let Some((k, value)) = bad {
            let i = value_offsets[1..].partition_point(|o| o.as_usize() - lo <= k);
            let row = first_row + i as u64;
            return Err(match value {
                None => Error::NullHistoryItem {
                    path: self.path(),
                    column: column.name.clone(),
                    row,
                },
                Some(value) => Error::HistoryItemOutOfRange {
                    path: self.path(),
                    column: column.name.clone(),
                    row,
                    value,
                },
            });
        }
        for i in 0..list.len() {
            if list.is_valid(i) {
                let (a, b) = (
                    value_offsets[i].as_usize() - lo,
                    value_offsets[i + 1].as_usize() - lo,
                );
                items.extend_from_slice(&converted[a..b]);
            }
            if items.len() as u64 > MAX_HISTORY_ITEMS_PER_READ {
                let row = first_row + i as u64;
                return Err(Error::TooManyHistoryItems {
                    path: self.path(),
                    range: first_row..row + 1,
                });
            }
            offsets.push(items.len() as u32);
        }
        Ok(())
    }

    /// Writes feature `j` of every row of `batch` into `out` (row-major,
    /// `stride` values per row).
    fn fill_feature(
        &self,
        column: &Column,
        j: usize,
        stride: usize,
        out: &mut [f32],
        batch: &RecordBatch,
        first_row: u64,
    ) -> Result<()> {
        let array = self.column(batch, column)?;
        let array = array.as_ref();
        let mut put = |i: usize, v: Option<f32>| match v {
            Some(v) => {
                out[i * stride + j] = v;
                Ok(())
            }
            None if self.ds.nulls_as_nan => {
                out[i * stride + j] = f32::NAN;
                Ok(())
            }
            None => Err(Error::NullFeature {
                path: self.path(),
                column: column.name.clone(),
                row: first_row + i as u64,
            }),
        };
        if let Some(a) = array.as_primitive_opt::<Float32Type>() {
            a.iter().enumerate().try_for_each(|(i, v)| put(i, v))
        } else if let Some(a) = array.as_primitive_opt::<Float64Type>() {
            a.iter()
                .enumerate()
                .try_for_each(|(i, v)| put(i, v.map(|x| x as f32)))
        } else if let Some(a) = array.as_boolean_opt() {
            a.iter()
                .enumerate()
                .try_for_each(|(i, v)| put(i, v.map(|b| if b { 1.0 } else { 0.0 })))
        } else {
            visit_ints(array, |i, v| put(i, v.map(|x| x as f32))).unwrap_or_else(|| {
                Err(self.found_type(column, array, "feature column", FEATURE_TYPES))
            })
        }
    }

    fn found_type(
        &self,
        column: &Column,
        array: &dyn Array,
        role: &'static str,
        expected: &'static str,
    ) -> Error {
        Error::ColumnType {
            path: self.path(),
            column: column.name.clone(),
            role,
            found: array.data_type().to_string(),
            expected,
        }
    }

    fn arrow_error(&self, source: arrow_schema::ArrowError) -> Error {
        Error::Arrow {
            path: self.path(),
            source,
        }
    }

    fn short_read(&self, range: Range<u64>, found: u64) -> Error {
        Error::ShortRead {
            path: self.path(),
            expected: range.end - range.start,
            range,
            found,
        }
    }
}

fn is_id_type(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_history_type(t: &DataType) -> bool {
    match t {
        DataType::List(item) | DataType::LargeList(item) => item.data_type().is_integer(),
        _ => false,
    }
}

fn is_feature_type(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Float32 | DataType::Float64 | DataType::Boolean)
}

/// Calls `f(i, what)` for every null, NaN or infinite slot of a feature
/// array (integers and booleans can only be null).
fn invalid_in(array: &dyn Array, mut f: impl FnMut(usize, String)) {
    let mut check = |i: usize, v: Option<f64>| match v {
        None => f(i, "null".into()),
        // A float64 beyond f32's range is infinite once read.
        Some(x) if !(x as f32).is_finite() => f(i, format!("{x}")),
        Some(_) => {}
    };
    if let Some(a) = array.as_primitive_opt::<Float32Type>() {
        a.iter()
            .enumerate()
            .for_each(|(i, v)| check(i, v.map(f64::from)));
    } else if let Some(a) = array.as_primitive_opt::<Float64Type>() {
        a.iter().enumerate().for_each(|(i, v)| check(i, v));
    } else if array.null_count() > 0 {
        (0..array.len())
            .filter(|&i| array.is_null(i))
            .for_each(|i| check(i, None));
    }
}

/// Calls `f(i, value)` for every slot of an integer array (`None` for a null);
/// returns `None` when `array` is not an integer array.
fn visit_ints(
    array: &dyn Array,
    mut f: impl FnMut(usize, Option<i128>) -> Result<()>,
) -> Option<Result<()>> {
    macro_rules! visit {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            Some(
                a.iter()
                    .enumerate()
                    .try_for_each(|(i, v)| f(i, v.map(|x| x as i128))),
            )
        }};
    }
    match array.data_type() {
        DataType::Int8 => visit!(Int8Type),
        DataType::Int16 => visit!(Int16Type),
        DataType::Int32 => visit!(Int32Type),
        DataType::Int64 => visit!(Int64Type),
        DataType::UInt8 => visit!(UInt8Type),
        DataType::UInt16 => visit!(UInt16Type),
        DataType::UInt32 => visit!(UInt32Type),
        DataType::UInt64 => visit!(UInt64Type),
        _ => None,
    }
}

/// Which row groups a range touches, and how many rows of the first of them
/// come before the range.
#[derive(Clone, Debug, PartialEq)]
struct ReadPlan {
    row_groups: Vec<usize>,
    skip: u64,
}

/// `starts` holds `row_groups + 1` input row numbers; `range` is non-empty and
/// inside the file.
fn plan_read(starts: &[u64], range: &Range<u64>) -> ReadPlan {
    // Row group g overlaps the range when starts[g] < end and starts[g+1] > start.
    let first = starts[1..].partition_point(|&end| end <= range.start);
    let last = starts[..starts.len() - 1].partition_point(|&s| s < range.end);
    ReadPlan {
        row_groups: (first..last).collect(),
        skip: range.start - starts[first],
    }
}

#[cfg(test)]
mod parts_tests;
#[cfg(test)]
mod tests;
