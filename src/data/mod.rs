//! Parquet input, read by row ranges, and `gen`, the synthetic reference data.
//!
//! The coordinator needs two things from an input file: an index (every
//! entity's id and history length, to cost and plan chunks) and, per chunk,
//! that chunk's rows in the columnar [`Rows`] the models consume. Input files
//! can be far larger than memory, so nothing here reads a whole file at once:
//! [`Dataset::scan_index`] walks one row group at a time over the id and history
//! columns only, and [`Dataset::read_rows`] decodes only the row groups that
//! overlap the requested range, projected to the columns the job uses.
//!
//! The schema is checked once, in [`Dataset::open`], so a bad file fails before
//! any work is planned; values (null ids, negative ids, out-of-range item ids,
//! null features) are checked as they are decoded, and every error names the
//! file, the column and the input row (0-based).
//!
//! This room does not plan, cost or score anything, and never writes to an
//! input file; [`gen`](r#gen) writes only the files it is asked to create.

pub mod r#gen;

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
use arrow_array::{Array, GenericListArray, OffsetSizeTrait, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::file::metadata::PageIndexPolicy;

use crate::model::{EntityIds, Rows};

pub use r#gen::{GenKind, GenOptions, GenSummary, generate};

pub type Result<T> = std::result::Result<T, Error>;

/// Rows decoded per Arrow batch; a range is read in batches of at most this
/// many rows and appended to one [`Rows`].
pub const MAX_BATCH_ROWS: usize = 65_536;

/// The most history items one [`Rows`] can hold: its offsets are `u32`.
pub const MAX_HISTORY_ITEMS_PER_READ: u64 = u32::MAX as u64;

/// What went wrong reading (or generating) a dataset. Every variant names the
/// file; value errors name the column and the 0-based input row.
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

/// A column the job reads: its name and its index among the file's top-level
/// columns.
#[derive(Clone, Debug)]
struct Column {
    name: String,
    index: usize,
}

/// An input Parquet file whose schema has been checked against the job.
#[derive(Debug)]
pub struct Dataset {
    path: PathBuf,
    metadata: ArrowReaderMetadata,
    id: Column,
    /// Read only when the model needs a history.
    history: Option<Column>,
    features: Vec<Column>,
    feature_names: Vec<String>,
    /// `row_groups + 1` input row numbers: row group `g` holds rows
    /// `row_group_starts[g]..row_group_starts[g + 1]`.
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
    /// Open and check the schema against `input`: the id column must be an
    /// integer (any int width; negative values are an error naming the row)
    /// or a string; the history column (required when `needs_history`) a list
    /// of integers (u32 range); features float32 / float64 / int / bool
    /// (converted to f32; true is 1.0). `feature_columns` `None` = every
    /// column but the id and history columns, in file order. Unknown column
    /// names: an error listing the columns the file has. A history column
    /// that is named but not needed is checked, then left unread.
    pub fn open(input: &crate::config::Input, needs_history: bool) -> Result<Dataset> {
        let path = input.path.clone();
        let file = File::open(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
        let metadata =
            ArrowReaderMetadata::load(&file, options).map_err(|source| Error::Parquet {
                path: path.clone(),
                source,
            })?;
        let schema = metadata.schema().clone();
        let available: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let find = |name: &str, role: &'static str| -> Result<Column> {
            match available.iter().position(|n| n == name) {
                Some(index) => Ok(Column {
                    name: name.to_string(),
                    index,
                }),
                None => Err(Error::UnknownColumn {
                    path: path.clone(),
                    role,
                    column: name.to_string(),
                    available: available.clone(),
                }),
            }
        };
        let type_error =
            |column: &Column, role: &'static str, expected: &'static str| Error::ColumnType {
                path: path.clone(),
                column: column.name.clone(),
                role,
                found: schema.field(column.index).data_type().to_string(),
                expected,
            };

        let id = find(&input.id_column, "id column")?;
        if !is_id_type(schema.field(id.index).data_type()) {
            return Err(type_error(&id, "id column", ID_TYPES));
        }

        let history = match (&input.history_column, needs_history) {
            (None, true) => return Err(Error::NoHistoryColumn { path }),
            (None, false) => None,
            (Some(name), _) => {
                let column = find(name, "history column")?;
                if !is_history_type(schema.field(column.index).data_type()) {
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
            None => available
                .iter()
                .enumerate()
                .filter(|(_, n)| {
                    **n != input.id_column && Some(*n) != input.history_column.as_ref()
                })
                .map(|(index, name)| Column {
                    name: name.clone(),
                    index,
                })
                .collect(),
        };
        for column in &features {
            if !is_feature_type(schema.field(column.index).data_type()) {
                return Err(type_error(column, "feature column", FEATURE_TYPES));
            }
        }
        let feature_names = features.iter().map(|c| c.name.clone()).collect();

        let mut row_group_starts = vec![0u64];
        for group in metadata.metadata().row_groups() {
            let last = *row_group_starts.last().unwrap_or(&0);
            row_group_starts.push(last + group.num_rows().max(0) as u64);
        }

        Ok(Dataset {
            path,
            metadata,
            id,
            history,
            features,
            feature_names,
            row_group_starts,
            row_groups_decoded: AtomicU64::new(0),
            nulls_as_nan: input.on_invalid != crate::config::OnInvalid::Error,
        })
    }

    /// Reads null features as NaN (or not), when the run decides
    /// `on_invalid` after loading the model (an ONNX graph defines missing
    /// values or does not).
    pub fn set_nulls_as_nan(&mut self, nan: bool) {
        self.nulls_as_nan = nan;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn num_rows(&self) -> u64 {
        *self.row_group_starts.last().unwrap_or(&0)
    }

    pub fn num_row_groups(&self) -> usize {
        self.row_group_starts.len() - 1
    }

    /// `num_row_groups() + 1` input row numbers: row group `g` holds rows
    /// `starts[g]..starts[g + 1]`. Ranges that follow these boundaries decode
    /// no row twice.
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
        let mut columns = vec![self.id.index];
        columns.extend(self.history.iter().map(|c| c.index));
        for group in 0..self.num_row_groups() {
            let start = self.row_group_starts[group];
            let rows = self.row_group_starts[group + 1] - start;
            let reader = self.reader(vec![group], &columns, None, rows)?;
            let mut row = start;
            for batch in reader {
                let batch = batch.map_err(|source| self.arrow_error(source))?;
                self.append_ids(&mut ids, &batch, row)?;
                if let Some(history) = &self.history {
                    offsets.clear();
                    offsets.push(0);
                    items.clear();
                    self.append_history(history, &mut offsets, &mut items, &batch, row)?;
                    history_lens.extend(offsets.windows(2).map(|w| w[1] - w[0]));
                }
                row += batch.num_rows() as u64;
            }
            if row != start + rows {
                return Err(self.short_read(start..start + rows, row - start));
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
        let columns: Vec<usize> = self.features.iter().map(|c| c.index).collect();
        for group in 0..self.num_row_groups() {
            let start = self.row_group_starts[group];
            let rows = self.row_group_starts[group + 1] - start;
            let reader = self.reader(vec![group], &columns, None, rows)?;
            let mut row = start;
            for batch in reader {
                let batch = batch.map_err(|source| self.arrow_error(source))?;
                let mut here = Vec::new();
                for column in &self.features {
                    let array = self.column(&batch, column)?;
                    invalid_in(array, |i, what| {
                        here.push(InvalidValue {
                            row: row + i as u64,
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
        Ok(found)
    }

    /// The rows at input row numbers `at` (ascending, no repeats), in that
    /// order: only the row groups holding them are decoded, and only those
    /// rows selected from them.
    pub fn read_rows_at(&self, at: &[u64]) -> Result<Rows> {
        let num_features = self.features.len();
        let mut ids = self.empty_ids();
        let mut features = vec![0f32; at.len() * num_features];
        let mut history_offsets = Vec::new();
        let mut history_items = Vec::new();
        if self.history.is_some() {
            history_offsets.push(0);
        }
        if let Some(&last) = at.last()
            && last >= self.num_rows()
        {
            return Err(Error::RangeOutOfBounds {
                path: self.path.clone(),
                range: last..last + 1,
                rows: self.num_rows(),
            });
        }
        let mut groups = Vec::new();
        let mut selectors = Vec::new();
        let mut i = 0;
        while i < at.len() {
            let g = self.row_group_starts[1..].partition_point(|&end| end <= at[i]);
            let (start, end) = (self.row_group_starts[g], self.row_group_starts[g + 1]);
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
        let mut columns = vec![self.id.index];
        columns.extend(self.history.iter().map(|c| c.index));
        columns.extend(self.features.iter().map(|c| c.index));
        // One row a batch, so every error names its exact input row.
        let reader = self.reader(groups, &columns, Some(RowSelection::from(selectors)), 1)?;
        let mut done = 0usize;
        for batch in reader {
            let batch = batch.map_err(|source| self.arrow_error(source))?;
            let n = batch.num_rows();
            if done + n > at.len() {
                return Err(self.short_read(at[0]..at[at.len() - 1] + 1, (done + n) as u64));
            }
            let row = at[done];
            self.append_ids(&mut ids, &batch, row)?;
            if let Some(history) = &self.history {
                self.append_history(
                    history,
                    &mut history_offsets,
                    &mut history_items,
                    &batch,
                    row,
                )?;
            }
            let out = &mut features[done * num_features..(done + n) * num_features];
            for (j, column) in self.features.iter().enumerate() {
                self.fill_feature(column, j, num_features, out, &batch, row)?;
            }
            done += n;
        }
        if done != at.len() {
            return Err(self.short_read(0..at.len() as u64, done as u64));
        }
        Ok(Rows {
            ids,
            num_features,
            features,
            history_offsets,
            history_items,
        })
    }

    /// Rows `range` (input row numbers): reads only the row groups that
    /// overlap it, projected to the needed columns, sliced to the range.
    pub fn read_rows(&self, range: Range<u64>) -> Result<Rows> {
        if range.start > range.end || range.end > self.num_rows() {
            return Err(Error::RangeOutOfBounds {
                path: self.path.clone(),
                range,
                rows: self.num_rows(),
            });
        }
        let expected = range.end - range.start;
        let mut ids = self.empty_ids();
        let num_features = self.features.len();
        let mut features = vec![0f32; expected as usize * num_features];
        let mut history_offsets = Vec::new();
        let mut history_items = Vec::new();
        if self.history.is_some() {
            history_offsets.push(0);
        }
        if expected == 0 {
            return Ok(Rows {
                ids,
                num_features,
                features,
                history_offsets,
                history_items,
            });
        }

        let plan = plan_read(&self.row_group_starts, &range);
        let mut columns = vec![self.id.index];
        columns.extend(self.history.iter().map(|c| c.index));
        columns.extend(self.features.iter().map(|c| c.index));
        let selection = RowSelection::from(vec![
            RowSelector::skip(plan.skip as usize),
            RowSelector::select(expected as usize),
        ]);
        let reader = self.reader(plan.row_groups, &columns, Some(selection), expected)?;

        let mut done = 0u64;
        for batch in reader {
            let batch = batch.map_err(|source| self.arrow_error(source))?;
            let first_row = range.start + done;
            let n = batch.num_rows() as u64;
            if done + n > expected {
                return Err(self.short_read(range.clone(), done + n));
            }
            self.append_ids(&mut ids, &batch, first_row)?;
            if let Some(history) = &self.history {
                self.append_history(
                    history,
                    &mut history_offsets,
                    &mut history_items,
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
            let out =
                &mut features[done as usize * num_features..(done + n) as usize * num_features];
            for (j, column) in self.features.iter().enumerate() {
                self.fill_feature(column, j, num_features, out, &batch, first_row)?;
            }
            done += n;
        }
        if done != expected {
            return Err(self.short_read(range, done));
        }
        Ok(Rows {
            ids,
            num_features,
            features,
            history_offsets,
            history_items,
        })
    }

    fn reader(
        &self,
        row_groups: Vec<usize>,
        columns: &[usize],
        selection: Option<RowSelection>,
        rows: u64,
    ) -> Result<ParquetRecordBatchReader> {
        let file = File::open(&self.path).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        self.row_groups_decoded
            .fetch_add(row_groups.len() as u64, Ordering::Relaxed);
        let builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone());
        let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
        let batch_size = (rows as usize).clamp(1, MAX_BATCH_ROWS);
        let mut builder = builder
            .with_row_groups(row_groups)
            .with_projection(mask)
            .with_batch_size(batch_size);
        if let Some(selection) = selection {
            builder = builder.with_row_selection(selection);
        }
        builder.build().map_err(|source| Error::Parquet {
            path: self.path.clone(),
            source,
        })
    }

    fn empty_ids(&self) -> EntityIds {
        let field = self.metadata.schema().field(self.id.index);
        if field.data_type().is_integer() {
            EntityIds::Int(Vec::new())
        } else {
            EntityIds::Str(Vec::new())
        }
    }

    fn column<'b>(&self, batch: &'b RecordBatch, column: &Column) -> Result<&'b dyn Array> {
        batch
            .column_by_name(&column.name)
            .map(|a| a.as_ref())
            .ok_or_else(|| Error::UnknownColumn {
                path: self.path.clone(),
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
        let array = self.column(batch, &self.id)?;
        let null = |i: usize| Error::NullId {
            path: self.path.clone(),
            column: self.id.name.clone(),
            row: first_row + i as u64,
        };
        match ids {
            EntityIds::Int(out) => {
                let visited = visit_ints(array, |i, v| match v {
                    None => Err(null(i)),
                    Some(v) if v < 0 => Err(Error::NegativeId {
                        path: self.path.clone(),
                        column: self.id.name.clone(),
                        row: first_row + i as u64,
                        value: v as i64,
                    }),
                    Some(v) => {
                        out.push(v as u64);
                        Ok(())
                    }
                });
                visited
                    .unwrap_or_else(|| Err(self.found_type(&self.id, array, "id column", ID_TYPES)))
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
                    Err(self.found_type(&self.id, array, "id column", ID_TYPES))
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
                    path: self.path.clone(),
                    column: column.name.clone(),
                    row,
                },
                Some(value) => Error::HistoryItemOutOfRange {
                    path: self.path.clone(),
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
                    path: self.path.clone(),
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
        let mut put = |i: usize, v: Option<f32>| match v {
            Some(v) => {
                out[i * stride + j] = v;
                Ok(())
            }
            None if self.nulls_as_nan => {
                out[i * stride + j] = f32::NAN;
                Ok(())
            }
            None => Err(Error::NullFeature {
                path: self.path.clone(),
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
            path: self.path.clone(),
            column: column.name.clone(),
            role,
            found: array.data_type().to_string(),
            expected,
        }
    }

    fn arrow_error(&self, source: arrow_schema::ArrowError) -> Error {
        Error::Arrow {
            path: self.path.clone(),
            source,
        }
    }

    fn short_read(&self, range: Range<u64>, found: u64) -> Error {
        Error::ShortRead {
            path: self.path.clone(),
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
mod tests;
