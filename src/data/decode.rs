//! Decoding part files into [`Rows`]: the Parquet reader for a range of a
//! part (only the row groups it touches, projected to the job's columns),
//! and each column turned into ids, histories and f32 features, with every
//! bad value named by its file, column and row.

use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

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
    ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::file::reader::ChunkReader;

use super::advise::Advice;
use super::pages::FeaturePages;
use super::{
    Column, Dataset, Error, FEATURE_TYPES, FolderValue, HISTORY_TYPES, ID_TYPES, MAX_BATCH_ROWS,
    MAX_HISTORY_ITEMS_PER_READ, Part, Result, Source,
};
use crate::model::{EntityIds, Rows};

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
pub(super) fn column_ranges(
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
pub(super) struct PartView<'a> {
    pub(super) part: &'a Part,
    pub(super) ds: &'a Dataset,
}

impl PartView<'_> {
    fn path(&self) -> PathBuf {
        self.part.name.clone()
    }

    /// The part's root column indices of the file columns among `columns`.
    pub(super) fn projection(&self, columns: &[&Column]) -> Result<Vec<usize>> {
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

    pub(super) fn reader(
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
    /// whose first `done` rows are already filled (and, unless `read_ids`,
    /// all of its ids).
    pub(super) fn read_at(
        &self,
        at: &[u64],
        out: &mut Rows,
        done: usize,
        read_ids: bool,
    ) -> Result<()> {
        super::unless_panics(&self.part.name, || {
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
            // The features picked from their pages where they can be; the ids
            // and histories (and else the features) decoded through Arrow.
            let nf = out.num_features;
            let picked =
                self.pick_features(at, &mut out.features[done * nf..(done + at.len()) * nf]);
            let mut columns: Vec<&Column> = Vec::new();
            if read_ids {
                columns.push(&self.ds.id);
            }
            columns.extend(self.ds.history.iter());
            if !picked {
                columns.extend(self.ds.features.iter());
            }
            if columns.is_empty() {
                return Ok(());
            }
            let projection = self.projection(&columns)?;
            // One row a batch, so every error names its exact row.
            let reader =
                self.reader(groups, &projection, Some(RowSelection::from(selectors)), 1)?;
            let mut k = 0usize;
            for batch in reader {
                let batch = batch.map_err(|source| self.arrow_error(source))?;
                let n = batch.num_rows();
                if k + n > at.len() {
                    return Err(self.short_read(at[0]..at[at.len() - 1] + 1, (k + n) as u64));
                }
                let row = at[k];
                if read_ids {
                    self.append_ids(&mut out.ids, &batch, row)?;
                }
                if let Some(history) = &self.ds.history {
                    self.append_history(
                        history,
                        &mut out.history_offsets,
                        &mut out.history_items,
                        &batch,
                        row,
                    )?;
                }
                if !picked {
                    let dst = &mut out.features[(done + k) * nf..(done + k + n) * nf];
                    self.fill_features(dst, &batch, row)?;
                }
                k += n;
            }
            if k != at.len() {
                return Err(self.short_read(0..at.len() as u64, k as u64));
            }
            Ok(())
        })
    }

    /// Rows `range` of this part (its own row numbers) into `out`, whose
    /// first `done` rows are already filled.
    pub(super) fn read_into(&self, range: Range<u64>, out: &mut Rows, done: u64) -> Result<()> {
        let expected = range.end - range.start;
        self.read_batches(range.clone(), expected, |batch, first_row, pages| {
            let at = done + first_row - range.start;
            self.append_batch(batch, first_row, &range, out, at, pages)?;
            Ok(true)
        })?;
        Ok(())
    }

    /// Rows `range` of this part handed to `each` as they are decoded, in
    /// pieces of at most `piece_rows` rows (and [`MAX_BATCH_ROWS`]); stops
    /// when `each` returns false. Whether every piece was taken.
    pub(super) fn read_pieces(
        &self,
        range: Range<u64>,
        piece_rows: u64,
        mut each: impl FnMut(Rows) -> bool,
    ) -> Result<bool> {
        self.read_batches(range.clone(), piece_rows, |batch, first_row, pages| {
            let mut piece = self.ds.empty_rows(batch.num_rows());
            self.append_batch(batch, first_row, &range, &mut piece, 0, pages)?;
            Ok(each(piece))
        })
    }

    /// Decodes rows `range` in batches of at most `batch_rows` rows, each
    /// handed to `each` with its first row (this part's numbering) and, when
    /// the features are decoded from their pages instead of the batch's
    /// columns, their decoder; stops when `each` returns false. Whether it
    /// read the whole range.
    fn read_batches(
        &self,
        range: Range<u64>,
        batch_rows: u64,
        mut each: impl FnMut(&RecordBatch, u64, &mut Option<FeaturePages>) -> Result<bool>,
    ) -> Result<bool> {
        super::unless_panics(&self.part.name, || {
            let ds = self.ds;
            let expected = range.end - range.start;
            let plan = plan_read(&self.part.row_group_starts, &range);
            let mut columns = vec![&ds.id];
            columns.extend(ds.history.iter());
            let every: Vec<&Column> = columns.iter().copied().chain(&ds.features).collect();
            let mut advice = Advice::new(self, &plan.row_groups, &self.projection(&every)?);
            advice.at_row(range.start);
            let mut pages = self.feature_pages(&range, &plan.row_groups, plan.skip)?;
            if pages.is_none() {
                columns.extend(ds.features.iter());
            }
            let projection = self.projection(&columns)?;
            let selection = RowSelection::from(vec![
                RowSelector::skip(plan.skip as usize),
                RowSelector::select(expected as usize),
            ]);
            let reader = self.reader(plan.row_groups, &projection, Some(selection), batch_rows)?;
            let mut read = 0u64;
            for batch in reader {
                let batch = batch.map_err(|source| self.arrow_error(source))?;
                let n = batch.num_rows() as u64;
                if read + n > expected {
                    return Err(self.short_read(range.clone(), read + n));
                }
                advice.at_row(range.start + read);
                if !each(&batch, range.start + read, &mut pages)? {
                    return Ok(false);
                }
                read += n;
            }
            if read != expected {
                return Err(self.short_read(range, read));
            }
            Ok(true)
        })
    }

    /// One decoded batch (whose first row is `first_row` of this part, in
    /// a read of `range`) into `out` from its row `at` on: ids and history
    /// appended, features written in place (from `pages` when it is there).
    fn append_batch(
        &self,
        batch: &RecordBatch,
        first_row: u64,
        range: &Range<u64>,
        out: &mut Rows,
        at: u64,
        pages: &mut Option<FeaturePages>,
    ) -> Result<()> {
        let ds = self.ds;
        self.append_ids(&mut out.ids, batch, first_row)?;
        if let Some(history) = &ds.history {
            self.append_history(
                history,
                &mut out.history_offsets,
                &mut out.history_items,
                batch,
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
        let num_features = out.num_features;
        let (a, b) = (at as usize, at as usize + batch.num_rows());
        let slice = &mut out.features[a * num_features..b * num_features];
        match pages {
            Some(pages) => self.fill_from_pages(pages, slice, first_row),
            None => self.fill_features(slice, batch, first_row),
        }
    }

    /// Writes every feature of `batch` into `out` (row-major). Unless nulls
    /// are read as NaN (`on_invalid = "error"`), a null, NaN or infinite
    /// value fails the read, naming the first such row of the batch (and of
    /// its values the first column).
    pub(super) fn fill_features(
        &self,
        out: &mut [f32],
        batch: &RecordBatch,
        first_row: u64,
    ) -> Result<()> {
        let stride = self.ds.features.len();
        let check = !self.ds.nulls_as_nan;
        let mut filled = Ok(());
        let finite = match self.plain_f32_columns(batch) {
            Some(columns) => transpose(&columns, out, check),
            None => {
                for (j, column) in self.ds.features.iter().enumerate() {
                    filled = self.fill_feature(column, j, stride, out, batch, first_row);
                    if filled.is_err() {
                        break;
                    }
                }
                // One pass the compiler vectorises.
                !check || out.iter().fold(true, |ok, v| ok & v.is_finite())
            }
        };
        let refused = match &filled {
            Err(Error::NullFeature { .. }) => true,
            Err(_) => return filled,
            Ok(()) => !finite,
        };
        if !refused {
            return Ok(());
        }
        let mut first: Option<(usize, usize, String)> = None;
        for (j, column) in self.ds.features.iter().enumerate() {
            let array = self.column(batch, column)?;
            invalid_in(array.as_ref(), |i, what| {
                if first.as_ref().is_none_or(|(r, c, _)| (i, j) < (*r, *c)) {
                    first = Some((i, j, what));
                }
            });
        }
        let (i, j, what) = first.expect("a refused batch holds an invalid value");
        let (path, column, row) = (
            self.path(),
            self.ds.features[j].name.clone(),
            first_row + i as u64,
        );
        Err(match what.as_str() {
            "null" => Error::NullFeature { path, column, row },
            _ => Error::InvalidFeature {
                path,
                column,
                row,
                what,
            },
        })
    }

    /// The feature columns' values when every one is an f32 column of the
    /// file with no nulls (the common case); `None` otherwise.
    fn plain_f32_columns<'b>(&self, batch: &'b RecordBatch) -> Option<Vec<&'b [f32]>> {
        self.ds
            .features
            .iter()
            .map(|column| {
                if column.folder.is_some() {
                    return None;
                }
                let array = batch
                    .column_by_name(&column.name)?
                    .as_primitive_opt::<Float32Type>()?;
                (array.null_count() == 0).then(|| array.values().as_ref())
            })
            .collect()
    }

    pub(super) fn column(&self, batch: &RecordBatch, column: &Column) -> Result<ArrayRef> {
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

    pub(super) fn append_ids(
        &self,
        ids: &mut EntityIds,
        batch: &RecordBatch,
        first_row: u64,
    ) -> Result<()> {
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
                if array.null_count() == 0 && append_ints(out, array) {
                    return Ok(());
                }
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
                    Some(s) if s.is_empty() || s.len() > super::MAX_ID_BYTES => {
                        Err(Error::IdLength {
                            path: self.path(),
                            column: id.name.clone(),
                            row: first_row + i as u64,
                            len: s.len(),
                            shown: crate::model::shown_id(s),
                        })
                    }
                    Some(s) => {
                        out.push(s.to_string());
                        Ok(())
                    }
                };
                let visited = visit_strs(array, &mut push).or_else(|| {
                    // A dictionary of strings: its values once, then a key
                    // per row.
                    let d = array.as_any_dictionary_opt()?;
                    let mut strings = Vec::new();
                    // Collecting the values cannot fail.
                    visit_strs(d.values(), |_, v| {
                        strings.push(v);
                        Ok(())
                    })?
                    .ok()?;
                    let keys = d.normalized_keys();
                    Some((0..array.len()).try_for_each(|i| {
                        push(i, (!array.is_null(i)).then(|| strings[keys[i]]).flatten())
                    }))
                });
                visited.unwrap_or_else(|| Err(self.found_type(id, array, "id column", ID_TYPES)))
            }
        }
    }

    pub(super) fn append_history(
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
        match array.as_primitive_opt::<Float32Type>() {
            // The common case, without a null check per value.
            Some(a) if a.null_count() == 0 => {
                let column = out[j..].iter_mut().step_by(stride);
                for (o, &v) in column.zip(a.values().iter()) {
                    *o = v;
                }
                return Ok(());
            }
            _ => {}
        }
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

    pub(super) fn arrow_error(&self, source: arrow_schema::ArrowError) -> Error {
        Error::Arrow {
            path: self.path(),
            source,
        }
    }

    pub(super) fn short_read(&self, range: Range<u64>, found: u64) -> Error {
        Error::ShortRead {
            path: self.path(),
            expected: range.end - range.start,
            range,
            found,
        }
    }
}

/// Calls `f(i, what)` for every null, NaN or infinite slot of a feature
/// array (integers and booleans can only be null).
pub(super) fn invalid_in(array: &dyn Array, mut f: impl FnMut(usize, String)) {
    let mut check = |i: usize, v: Option<f64>| match v {
        None => f(i, "null".into()),
        // A float64 beyond f32's range is infinite once read.
        Some(x) if !(x as f32).is_finite() => f(i, format!("{x}")),
        Some(_) => {}
    };
    if let Some(a) = array.as_primitive_opt::<Float32Type>() {
        // The common case first, in one pass the compiler vectorises.
        if a.null_count() == 0 && a.values().iter().fold(true, |ok, v| ok & v.is_finite()) {
            return;
        }
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

/// Calls `f(i, value)` for every slot of a string array of any of Arrow's
/// layouts (`None` for a null); returns `None` when `array` holds no
/// strings.
fn visit_strs<'a>(
    array: &'a dyn Array,
    mut f: impl FnMut(usize, Option<&'a str>) -> Result<()>,
) -> Option<Result<()>> {
    macro_rules! visit {
        ($a:expr) => {
            Some($a.iter().enumerate().try_for_each(|(i, v)| f(i, v)))
        };
    }
    if let Some(a) = array.as_string_opt::<i32>() {
        visit!(a)
    } else if let Some(a) = array.as_string_opt::<i64>() {
        visit!(a)
    } else if let Some(a) = array.as_string_view_opt() {
        visit!(a)
    } else {
        None
    }
}

/// `$each!(T)` for the Arrow integer type `T` of `$array`, `$other` when it
/// is not an integer array.
macro_rules! by_int_type {
    ($array:expr, $each:ident, $other:expr) => {
        match $array.data_type() {
            DataType::Int8 => $each!(Int8Type),
            DataType::Int16 => $each!(Int16Type),
            DataType::Int32 => $each!(Int32Type),
            DataType::Int64 => $each!(Int64Type),
            DataType::UInt8 => $each!(UInt8Type),
            DataType::UInt16 => $each!(UInt16Type),
            DataType::UInt32 => $each!(UInt32Type),
            DataType::UInt64 => $each!(UInt64Type),
            _ => $other,
        }
    };
}

/// Appends every value of `array`, an integer array with no nulls, to
/// `out` in one pass over its values; false (nothing appended) when it is
/// not an integer array or holds a negative value, which
/// [`PartView::append_ids`] then visits one by one to name the row. Each
/// id of the index scan went through a closure, a widening to `i128` and
/// a push of its own; in one pass the run's first attempt started at a
/// median 25.8 ms instead of 31.6 ms (mlp, 1M rows, 10 runs each way).
fn append_ints(out: &mut Vec<u64>, array: &dyn Array) -> bool {
    macro_rules! append {
        ($t:ty) => {{
            let values = array.as_primitive::<$t>().values();
            #[allow(unused_comparisons, clippy::absurd_extreme_comparisons)]
            let negative = values.iter().fold(false, |n, &v| n | (v < 0));
            if negative {
                return false;
            }
            out.extend(values.iter().map(|&v| v as u64));
            true
        }};
    }
    by_int_type!(array, append, false)
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
    by_int_type!(array, visit, None)
}

/// Which row groups a range touches, and how many rows of the first of them
/// come before the range.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ReadPlan {
    pub(super) row_groups: Vec<usize>,
    pub(super) skip: u64,
}

/// `starts` holds `row_groups + 1` input row numbers; `range` is non-empty and
/// inside the file.
pub(super) fn plan_read(starts: &[u64], range: &Range<u64>) -> ReadPlan {
    // Row group g overlaps the range when starts[g] < end and starts[g+1] > start.
    let first = starts[1..].partition_point(|&end| end <= range.start);
    let last = starts[..starts.len() - 1].partition_point(|&s| s < range.end);
    ReadPlan {
        row_groups: (first..last).collect(),
        skip: range.start - starts[first],
    }
}

/// Rows written together by [`transpose`]: their row-major block (256 rows
/// of 64 features: 64 KiB) stays in the L2 cache while every column is
/// copied into it, instead of each column's writes striding over the whole
/// batch.
const TRANSPOSE_ROWS: usize = 256;

/// `columns` (one slice per feature, each a value per row) into `out`, row
/// after row; with `check`, whether every value is finite (each value
/// checked as it is moved: in the registers of the SIMD path).
pub(super) fn transpose(columns: &[&[f32]], out: &mut [f32], check: bool) -> bool {
    let stride = columns.len();
    if stride == 0 {
        return true;
    }
    let rows = out.len() / stride;
    assert!(columns.iter().all(|c| c.len() >= rows));
    let simd = matches!(
        crate::model::simd_level(),
        crate::model::SimdLevel::Avx512 | crate::model::SimdLevel::Avx2
    );
    let mut finite = true;
    for start in (0..rows).step_by(TRANSPOSE_ROWS) {
        let end = (start + TRANSPOSE_ROWS).min(rows);
        let block = &mut out[start * stride..end * stride];
        // Columns in groups of eight, rows in groups of eight, each an
        // 8 x 8 square turned in registers; what is left one value at a time.
        let (mut squares_to, mut rows_to) = (0, start);
        if simd {
            squares_to = stride / 8 * 8;
            rows_to = start + (end - start) / 8 * 8;
            for j in (0..squares_to).step_by(8) {
                let squares = &columns[j..j + 8];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 is present (`simd`); columns j..j + 8 hold
                // rows start..rows_to (asserted above), and the block holds
                // (end - start) rows of `stride` values.
                unsafe {
                    finite &= match check {
                        true => transpose_squares_avx2::<true>(
                            squares,
                            start..rows_to,
                            block,
                            stride,
                            j,
                        ),
                        false => transpose_squares_avx2::<false>(
                            squares,
                            start..rows_to,
                            block,
                            stride,
                            j,
                        ),
                    };
                }
            }
        }
        for (j, column) in columns.iter().enumerate() {
            let from = if j < squares_to { rows_to } else { start };
            if from == end {
                continue;
            }
            for (o, &v) in block[(from - start) * stride + j..]
                .iter_mut()
                .step_by(stride)
                .zip(&column[from..end])
            {
                *o = v;
                finite &= !check || v.is_finite();
            }
        }
    }
    finite
}

/// Rows `rows` (a multiple of eight of them) of eight columns into `block`
/// (whose first row is `rows.start`), at columns `col..col + 8` of rows of
/// `stride` values; with `CHECK`, whether every value moved is finite (else
/// true).
///
/// # Safety
/// AVX2 must be present; every column holds `rows`; `block` holds
/// `rows.len()` rows of `stride >= col + 8` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unused_unsafe)]
unsafe fn transpose_squares_avx2<const CHECK: bool>(
    columns: &[&[f32]],
    rows: Range<usize>,
    block: &mut [f32],
    stride: usize,
    col: usize,
) -> bool {
    use std::arch::x86_64::*;
    debug_assert!(columns.len() == 8 && rows.len() % 8 == 0 && col + 8 <= stride);
    let base = rows.start;
    // Lanes that held a value whose magnitude is not below infinity: an
    // infinity, or a NaN (unordered compares true).
    let (sign, infinity) = (_mm256_set1_ps(-0.0), _mm256_set1_ps(f32::INFINITY));
    let mut bad = _mm256_setzero_ps();
    for r in rows.step_by(8) {
        // SAFETY: rows r..r + 8 exist in every column and in the block.
        unsafe {
            let c: [__m256; 8] =
                std::array::from_fn(|k| _mm256_loadu_ps(columns[k].as_ptr().add(r)));
            if CHECK {
                for v in c {
                    let magnitude = _mm256_andnot_ps(sign, v);
                    bad = _mm256_or_ps(bad, _mm256_cmp_ps::<_CMP_NLT_UQ>(magnitude, infinity));
                }
            }
            // Pairs of columns interleaved, then pairs of pairs: row i's
            // eight values end in register i (halves swapped across lanes).
            let t0 = _mm256_unpacklo_ps(c[0], c[1]);
            let t1 = _mm256_unpackhi_ps(c[0], c[1]);
            let t2 = _mm256_unpacklo_ps(c[2], c[3]);
            let t3 = _mm256_unpackhi_ps(c[2], c[3]);
            let t4 = _mm256_unpacklo_ps(c[4], c[5]);
            let t5 = _mm256_unpackhi_ps(c[4], c[5]);
            let t6 = _mm256_unpacklo_ps(c[6], c[7]);
            let t7 = _mm256_unpackhi_ps(c[6], c[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let out = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (i, v) in out.iter().enumerate() {
                let o = block.as_mut_ptr().add((r - base + i) * stride + col);
                _mm256_storeu_ps(o, *v);
            }
        }
    }
    _mm256_movemask_ps(bad) == 0
}
