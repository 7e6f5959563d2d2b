//! Feature columns decoded straight from their Parquet pages into the
//! row-major rows the models read: each column's values of up to
//! [`COLUMN_ROWS`] rows go from its pages (dictionary indices unpacked a
//! group of eight at a time, or plain values) into one reused buffer, which
//! is then turned into rows eight by eight; no Arrow array is built for
//! them. The ids and histories of the same rows are decoded through Arrow
//! beside them.
//!
//! Only the columns [`PartView::leaves`] accepts are decoded here: flat
//! `FLOAT` and `DOUBLE` columns, required or optional, whose pages are
//! `PLAIN` or dictionary encoded (what pyarrow, Spark, DuckDB and herd
//! write for features). A batch in which anything else turns up (another
//! encoding, a page that does not parse, a null or a value that is not
//! finite where those are refused) is read again through Arrow, and so is
//! the rest of the read: Arrow reads what this does not, and names every
//! bad value.
//!
//! Each column holds one page and its chunk's dictionary at a time, as
//! Arrow's column readers do, and a read holds the buffer of
//! `COLUMN_ROWS` x features f32 (4 MiB at 64 features) where Arrow held
//! an array per column of each batch.

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use parquet::basic::Encoding;
use parquet::column::page::{Page, PageReader};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;

use super::decode::PartView;
use super::pick::{self, Leaf};
use super::remote::Prefetched;
use super::{Result, Source};

/// Rows decoded together: every column's values of these rows, one column
/// after another, then turned into rows eight by eight. A column's
/// dictionary (up to its row group's row count of values) stays in the
/// cache while its values of these rows are gathered from it.
const COLUMN_ROWS: usize = 16_384;

/// A tile is cut short where a page ends (so that every column of it can
/// be read in place) only when this many rows are left in the page.
const MIN_IN_PLACE_ROWS: usize = 256;

/// Values unpacked at a time (dictionary indices, definition levels), on
/// the stack.
const TILE_ROWS: usize = 256;

/// The features of one read of a part (a row range), decoded batch by
/// batch in row order: from their pages while that works, then through
/// Arrow.
pub(super) struct FeaturePages {
    mode: Mode,
    /// The read's end (this part's numbering): a fallback reads up to it.
    end: u64,
    /// Values per row.
    stride: usize,
    /// A tile's values, column after column, before they are turned into
    /// rows.
    columns: Vec<f32>,
}

enum Mode {
    Pages(Vec<Cursor>),
    Arrow(ArrowFeatures),
}

impl PartView<'_> {
    /// A page decoder of the features of rows `range`, which starts `skip`
    /// rows into row group `groups[0]`; `None` when a feature column is
    /// one it does not read (another type, a folder column, nested).
    pub(super) fn feature_pages(
        &self,
        range: &Range<u64>,
        groups: &[usize],
        skip: u64,
    ) -> Result<Option<FeaturePages>> {
        let Some(leaves) = self.leaves() else {
            return Ok(None);
        };
        let chunks = match &self.part.source {
            Source::Local(path) => {
                let file = File::open(path).map_err(|source| super::Error::Io {
                    path: path.clone(),
                    source,
                })?;
                Chunks::Local(Arc::new(PageFile::new(file).map_err(|source| {
                    super::Error::Io {
                        path: path.clone(),
                        source,
                    }
                })?))
            }
            Source::Remote(object) => {
                let columns: Vec<usize> = leaves.iter().map(|l| l.index).collect();
                let ranges = super::decode::column_ranges(&self.part.metadata, groups, &columns);
                Chunks::Remote(Arc::new(object.prefetch(ranges)?))
            }
        };
        let metadata = self.part.metadata.metadata().clone();
        let cursors = leaves
            .into_iter()
            .map(|leaf| Cursor {
                leaf,
                metadata: metadata.clone(),
                chunks: chunks.clone(),
                groups: groups.iter().rev().copied().collect(),
                pages: None,
                dictionary: Dictionary::Floats(Vec::new()),
                page: None,
                skip: skip as usize,
                group_left: 0,
            })
            .collect();
        Ok(Some(FeaturePages {
            mode: Mode::Pages(cursors),
            end: range.end,
            stride: self.ds.features.len(),
            columns: Vec::new(),
        }))
    }

    /// The features of the next `out.len() / stride` rows of `pages`' read,
    /// whose first is `first_row` (this part's numbering), into `out`
    /// (row-major). Unless nulls are read as NaN, a null, NaN or infinite
    /// value fails the read, naming its row and column.
    pub(super) fn fill_from_pages(
        &self,
        pages: &mut FeaturePages,
        out: &mut [f32],
        first_row: u64,
    ) -> Result<()> {
        let stride = pages.stride;
        if let Mode::Pages(cursors) = &mut pages.mode {
            let nulls_as_nan = self.ds.nulls_as_nan;
            let decoded = decode_rows(cursors, &mut pages.columns, out, stride, nulls_as_nan);
            // A NaN or infinite value read where those fail the read: Arrow
            // finds it again, and names it.
            if decoded == Some(true) {
                return Ok(());
            }
            let rest = first_row..pages.end;
            let reader = self.feature_reader(&rest)?;
            pages.mode = Mode::Arrow(ArrowFeatures {
                reader,
                pending: None,
            });
        }
        let Mode::Arrow(arrow) = &mut pages.mode else {
            unreachable!("a fallback to Arrow is set above");
        };
        let n = out.len() / stride.max(1);
        let mut done = 0usize;
        while done < n {
            let batch = match arrow.pending.take() {
                Some(b) => b,
                None => match arrow.reader.next() {
                    Some(b) => b.map_err(|source| self.arrow_error(source))?,
                    None => {
                        let at = first_row + done as u64;
                        return Err(self.short_read(at..at + (n - done) as u64, 0));
                    }
                },
            };
            let take = batch.num_rows().min(n - done);
            if take < batch.num_rows() {
                arrow.pending = Some(batch.slice(take, batch.num_rows() - take));
            }
            let dst = &mut out[done * stride..(done + take) * stride];
            self.fill_features(dst, &batch.slice(0, take), first_row + done as u64)?;
            done += take;
        }
        Ok(())
    }

    /// An Arrow reader of the feature columns of rows `range`.
    fn feature_reader(&self, range: &Range<u64>) -> Result<ParquetRecordBatchReader> {
        use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
        let plan = super::decode::plan_read(&self.part.row_group_starts, range);
        let projection = self.projection(&self.ds.features.iter().collect::<Vec<_>>())?;
        let n = range.end - range.start;
        let selection = RowSelection::from(vec![
            RowSelector::skip(plan.skip as usize),
            RowSelector::select(n as usize),
        ]);
        self.reader(plan.row_groups, &projection, Some(selection), n)
    }
}

/// Arrow's reading of the rest of a read's features, after the pages
/// could not be decoded here.
struct ArrowFeatures {
    reader: ParquetRecordBatchReader,
    /// Rows of the last batch not handed out yet.
    pending: Option<RecordBatch>,
}

/// Rows `out.len() / stride` of every column into `out`, a tile of rows at
/// a time: each column's values of the tile into `columns`, then the tile
/// turned into rows. Whether every value is finite (or nulls are read as
/// NaN); `None` when a column cannot be decoded here (its cursors are then
/// left anywhere).
fn decode_rows(
    cursors: &mut [Cursor],
    columns: &mut Vec<f32>,
    out: &mut [f32],
    stride: usize,
    nulls_as_nan: bool,
) -> Option<bool> {
    if stride == 0 {
        return Some(true);
    }
    let rows = out.len() / stride;
    let tile_rows = rows.min(COLUMN_ROWS);
    columns.resize(stride * tile_rows, 0.0);
    let mut finite = true;
    // Whether each column of the tile is read in place.
    let mut in_place = vec![false; stride];
    let mut start = 0;
    while start < rows {
        let mut n = tile_rows.min(rows - start);
        // The tile ends where a column's page does (in most files every
        // column's pages end together: a row group's one page, or columns
        // of one width cut at one size), so that each can be read in place.
        for cursor in cursors.iter_mut() {
            match cursor.plain_left()? {
                Some(left) if left >= MIN_IN_PLACE_ROWS => n = n.min(left),
                _ => {}
            }
        }
        // A column whose page holds the tile's values as f32 is turned
        // into rows from the page itself; the others are decoded first.
        for ((cursor, column), here) in cursors
            .iter_mut()
            .zip(columns.chunks_exact_mut(tile_rows))
            .zip(&mut in_place)
        {
            *here = cursor.in_place(n).is_some();
            if !*here {
                cursor.decode(&mut column[..n], nulls_as_nan)?;
            }
        }
        let tile: Vec<&[f32]> = cursors
            .iter()
            .zip(columns.chunks_exact(tile_rows))
            .zip(&in_place)
            .map(|((cursor, column), &here)| match here {
                true => cursor.in_place(n).expect("checked above"),
                false => &column[..n],
            })
            .collect();
        let rows_out = &mut out[start * stride..(start + n) * stride];
        finite &= super::decode::transpose(&tile, rows_out, !nulls_as_nan);
        for (cursor, _) in cursors.iter_mut().zip(&in_place).filter(|(_, h)| **h) {
            cursor.pass_in_place(n);
        }
        start += n;
    }
    Some(finite)
}

/// Where a read's column chunks come from.
#[derive(Clone)]
enum Chunks {
    Local(Arc<PageFile>),
    Remote(Arc<Prefetched>),
}

impl Chunks {
    fn open(
        &self,
        chunk: &parquet::file::metadata::ColumnChunkMetaData,
        rows: usize,
    ) -> parquet::errors::Result<Box<dyn PageReader>> {
        Ok(match self {
            Chunks::Local(f) => Box::new(SerializedPageReader::new(f.clone(), chunk, rows, None)?),
            Chunks::Remote(p) => Box::new(SerializedPageReader::new(p.clone(), chunk, rows, None)?),
        })
    }
}

/// A local part file read at positions (`pread`): one system call for a
/// page's header, one for its bytes, and no file handle duplicated for
/// either (as Parquet's reader of a `File` does).
pub(super) struct PageFile {
    file: Arc<File>,
    len: u64,
}

impl PageFile {
    pub(super) fn new(file: File) -> std::io::Result<PageFile> {
        let len = file.metadata()?.len();
        Ok(PageFile {
            file: Arc::new(file),
            len,
        })
    }

    /// `buf.len()` bytes from `at`; `None` when the file ends first or the
    /// read fails.
    pub(super) fn read_exact_at(&self, buf: &mut [u8], at: u64) -> Option<()> {
        let mut done = 0;
        while done < buf.len() {
            match read_at(&self.file, &mut buf[done..], at + done as u64) {
                Ok(0) => return None,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        Some(())
    }
}

fn read_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_at(file, buf, at)
    }
    #[cfg(windows)]
    {
        std::os::windows::fs::FileExt::seek_read(file, buf, at)
    }
}

/// Bytes from `at` on into `buf`, which need not be initialised; how many
/// were read (their first `n` are then initialised).
fn read_at_uninit(
    file: &File,
    buf: &mut [std::mem::MaybeUninit<u8>],
    at: u64,
) -> std::io::Result<usize> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let offset = libc::off_t::try_from(at).map_err(std::io::Error::other)?;
        // SAFETY: pread writes at most `buf.len()` bytes into `buf`, which
        // is valid for that many writes; it never reads them.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
                offset,
            )
        };
        usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
    }
    #[cfg(not(unix))]
    {
        let mut zeroed = vec![0u8; buf.len()];
        let n = read_at(file, &mut zeroed, at)?;
        for (to, from) in buf.iter_mut().zip(&zeroed[..n]) {
            to.write(*from);
        }
        Ok(n)
    }
}

impl Length for PageFile {
    fn len(&self) -> u64 {
        self.len
    }
}

/// Bytes of a file from a position on, read as asked.
pub(super) struct PageFileReader {
    file: Arc<File>,
    at: u64,
}

impl Read for PageFileReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = read_at(&self.file, buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl ChunkReader for PageFile {
    type T = std::io::BufReader<PageFileReader>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        // A page header is a few dozen bytes, more with statistics.
        Ok(std::io::BufReader::with_capacity(
            1024,
            PageFileReader {
                file: self.file.clone(),
                at: start,
            },
        ))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        // Read into the buffer's spare room: every page's bytes once more
        // (zeroing it first) was a tenth of the decode.
        let mut buf: Vec<u8> = Vec::with_capacity(length);
        while buf.len() < length {
            let at = start + buf.len() as u64;
            match read_at_uninit(&self.file, buf.spare_capacity_mut(), at) {
                Ok(0) => break,
                // SAFETY: the read initialised the first `n` bytes of the
                // spare room, and `n` is at most its length.
                Ok(n) => unsafe { buf.set_len(buf.len() + n) },
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ParquetError::External(Box::new(e))),
            }
        }
        let done = buf.len();
        if done != length {
            return Err(ParquetError::EOF(format!(
                "bytes {start}..{} of a {}-byte file: only {done} read (did the file change?)",
                start + length as u64,
                self.len
            )));
        }
        Ok(Bytes::from(buf))
    }
}

/// One feature column of a read: the row groups left, the chunk being
/// read, its dictionary and the page being decoded.
struct Cursor {
    leaf: Leaf,
    metadata: Arc<parquet::file::metadata::ParquetMetaData>,
    chunks: Chunks,
    /// The row groups left to read, the next one last.
    groups: Vec<usize>,
    pages: Option<Box<dyn PageReader>>,
    /// The chunk's dictionary.
    dictionary: Dictionary,
    page: Option<PageValues>,
    /// Rows of the first row group before the read, not skipped yet.
    skip: usize,
    /// Rows of the row group being read not decoded or passed over yet:
    /// its pages must hold them all.
    group_left: usize,
}

impl Cursor {
    /// The next `out.len()` rows' values into `out`. A null is NaN when
    /// `nulls_as_nan`, else fails the decoding, as does anything this
    /// module does not read.
    fn decode(&mut self, out: &mut [f32], nulls_as_nan: bool) -> Option<()> {
        let n = out.len();
        let mut done = 0usize;
        while done < n {
            let page = match self.page.as_mut().filter(|p| p.left > 0) {
                Some(page) => page,
                None => {
                    self.next_page()?;
                    continue;
                }
            };
            let m = page.left.min(n - done).min(TILE_ROWS);
            let out = &mut out[done..done + m];
            match &mut page.defs {
                None => page.values.take(&self.dictionary, out)?,
                Some(defs) => {
                    // Each row's level, then its value or NaN.
                    let mut levels = [0u32; TILE_ROWS];
                    defs.take_into(&mut levels[..m])?;
                    let defined = levels[..m].iter().map(|&l| l as usize).sum::<usize>();
                    if defined < m && !nulls_as_nan {
                        return None;
                    }
                    let mut values = [0f32; TILE_ROWS];
                    page.values.take(&self.dictionary, &mut values[..defined])?;
                    let mut next = values.iter();
                    for (v, &level) in out.iter_mut().zip(&levels[..m]) {
                        *v = match level {
                            1 => *next.next()?,
                            _ => f32::NAN,
                        };
                    }
                }
            }
            page.left -= m;
            self.group_left -= m;
            done += m;
        }
        Some(())
    }

    /// Rows left in the current page (the next one when it is done) when
    /// its values can be read in place ([`Cursor::in_place`]); `Some(None)`
    /// when they cannot, `None` when the next page cannot be read here.
    fn plain_left(&mut self) -> Option<Option<usize>> {
        if self.page.as_ref().is_none_or(|p| p.left == 0) {
            self.next_page()?;
        }
        Some(self.in_place(1).and(self.page.as_ref().map(|p| p.left)))
    }

    /// The next `n` rows' values where they lie in the current page, read
    /// as f32 in place: a `PLAIN` page of a required `FLOAT` column holding
    /// `n` more rows, its values 4-byte aligned in memory. Nothing is
    /// consumed.
    fn in_place(&self, n: usize) -> Option<&[f32]> {
        if cfg!(target_endian = "big") {
            return None;
        }
        let page = self
            .page
            .as_ref()
            .filter(|p| p.left >= n && p.defs.is_none())?;
        let Stored::Plain { buf, at, width: 4 } = &page.values else {
            return None;
        };
        let bytes = buf.get(*at..at.checked_add(n.checked_mul(4)?)?)?;
        if bytes.as_ptr().align_offset(std::mem::align_of::<f32>()) != 0 {
            return None;
        }
        // SAFETY: `bytes` holds `n` f32 (every bit pattern is one) in the
        // platform's byte order (little-endian, as Parquet stores them),
        // aligned for f32, and lives as long as `self`'s page.
        Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), n) })
    }

    /// Passes over the `n` rows [`Cursor::in_place`] gave.
    fn pass_in_place(&mut self, n: usize) {
        let page = self.page.as_mut().expect("a page holding the rows");
        if let Stored::Plain { at, .. } = &mut page.values {
            *at += n * 4;
        }
        page.left -= n;
        self.group_left -= n;
    }

    /// Moves to the next data page of the read (the next row group's
    /// first when this one's are done), skipping the rows before the read.
    fn next_page(&mut self) -> Option<()> {
        loop {
            if self.group_left == 0 {
                // The next row group (its chunk's pages end with its rows).
                let g = self.groups.pop()?;
                let group = self.metadata.row_group(g);
                let rows = usize::try_from(group.num_rows()).ok()?;
                let chunk = group.column(self.leaf.index);
                self.pages = Some(self.chunks.open(chunk, rows).ok()?);
                self.dictionary = Dictionary::Floats(Vec::new());
                self.group_left = rows;
                continue;
            }
            // Pages that end before their row group's rows do: not read here.
            let pages = self.pages.as_mut()?;
            if self.skip > 0 {
                // A page wholly before the read is passed over unread.
                match pages.peek_next_page().ok()?? {
                    meta if !meta.is_dict => {
                        let rows = meta.num_rows.or(meta.num_levels)?;
                        if rows <= self.skip && rows <= self.group_left {
                            pages.skip_next_page().ok()?;
                            self.skip -= rows;
                            self.group_left -= rows;
                            continue;
                        }
                    }
                    _ => {}
                }
            }
            let page = pages.get_next_page().ok()??;
            match page {
                Page::DictionaryPage {
                    buf,
                    num_values,
                    encoding,
                    ..
                } => {
                    if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
                        return None;
                    }
                    self.dictionary = Dictionary::new(buf, self.leaf.width, num_values as usize)?;
                }
                page => {
                    let mut values = PageValues::parse(page, self.leaf)?;
                    if values.left > self.group_left {
                        return None;
                    }
                    if self.skip > 0 {
                        let m = self.skip.min(values.left);
                        values.pass(m)?;
                        self.skip -= m;
                        self.group_left -= m;
                    }
                    self.page = Some(values);
                    if self.page.as_ref().is_some_and(|p| p.left > 0) {
                        return Some(());
                    }
                }
            }
        }
    }
}

/// A column chunk's dictionary page: `FLOAT` values kept as stored (the
/// page's own bytes, read where an index points), `DOUBLE` values turned
/// into f32 once.
enum Dictionary {
    Stored(Bytes),
    Floats(Vec<f32>),
}

impl Dictionary {
    /// The dictionary of `n` plain little-endian values `width` bytes wide.
    fn new(bytes: Bytes, width: usize, n: usize) -> Option<Dictionary> {
        let len = n.checked_mul(width)?;
        if bytes.len() < len {
            return None;
        }
        Some(match width {
            4 => Dictionary::Stored(bytes.slice(..len)),
            _ => Dictionary::Floats(
                bytes[..len]
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                    .collect(),
            ),
        })
    }

    fn len(&self) -> usize {
        match self {
            Dictionary::Stored(bytes) => bytes.len() / 4,
            Dictionary::Floats(values) => values.len(),
        }
    }

    /// `out[k] = self[indices[k]]` for every k; each index is below
    /// `self.len()`.
    fn gather(&self, indices: &[u32], out: &mut [f32]) {
        match self {
            Dictionary::Stored(bytes) => {
                let values = bytes.as_ref();
                for (v, &i) in out.iter_mut().zip(indices) {
                    let at = i as usize * 4;
                    let b = &values[at..at + 4];
                    *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Dictionary::Floats(values) => {
                for (v, &i) in out.iter_mut().zip(indices) {
                    *v = values[i as usize];
                }
            }
        }
    }
}

/// A data page being decoded.
struct PageValues {
    /// Rows left in the page.
    left: usize,
    /// The rows' definition levels, when the column is optional.
    defs: Option<Hybrid>,
    values: Stored,
}

/// A page's stored (non-null) values.
enum Stored {
    Plain { buf: Bytes, at: usize, width: usize },
    Dictionary(Hybrid),
}

impl PageValues {
    /// A data page of `leaf`'s column; `None` for what this module does not
    /// read.
    fn parse(page: Page, leaf: Leaf) -> Option<PageValues> {
        let parts = pick::data_page_parts(&page, leaf)?;
        let buf = page.buffer().clone();
        let (rows, encoding) = (parts.rows, parts.encoding);
        let defs = parts.levels.map(|r| buf.slice(r));
        let values = buf.slice(parts.values);
        let values = match encoding {
            Encoding::PLAIN => Stored::Plain {
                buf: values,
                at: 0,
                width: leaf.width,
            },
            Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY => {
                let width = *values.first()? as usize;
                Stored::Dictionary(Hybrid::new(values.slice(1..), width)?)
            }
            _ => return None,
        };
        Some(PageValues {
            left: rows,
            defs: match defs {
                Some(levels) => Some(Hybrid::new(levels, 1)?),
                None => None,
            },
            values,
        })
    }

    /// Passes over the next `m` rows.
    fn pass(&mut self, m: usize) -> Option<()> {
        let stored = match &mut self.defs {
            None => m,
            Some(defs) => {
                let mut defined = 0usize;
                defs.take(m, |_, level| defined += level as usize)?;
                defined
            }
        };
        match &mut self.values {
            Stored::Plain { at, width, buf } => {
                *at = at.checked_add(stored.checked_mul(*width)?)?;
                (*at <= buf.len()).then_some(())?;
            }
            Stored::Dictionary(indices) => indices.take(stored, |_, _| {})?,
        }
        self.left -= m;
        Some(())
    }
}

impl Stored {
    /// The next `out.len()` stored values into `out`.
    fn take(&mut self, dictionary: &Dictionary, out: &mut [f32]) -> Option<()> {
        let m = out.len();
        match self {
            Stored::Plain { buf, at, width } => {
                let end = at.checked_add(m.checked_mul(*width)?)?;
                let bytes = buf.get(*at..end)?;
                match width {
                    4 => {
                        for (v, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        }
                    }
                    _ => {
                        for (v, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                            *v = f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32;
                        }
                    }
                }
                *at = end;
            }
            Stored::Dictionary(indices) => {
                // The indices first, then the values they point to: two
                // tight loops instead of one that waits on both.
                for out in out.chunks_mut(TILE_ROWS) {
                    let mut at = [0u32; TILE_ROWS];
                    let at = &mut at[..out.len()];
                    indices.take_into(at)?;
                    let top = at.iter().fold(0u32, |top, &i| top.max(i));
                    if top as usize >= dictionary.len() {
                        return None;
                    }
                    dictionary.gather(at, out);
                }
            }
        }
        Some(())
    }
}

/// A reader of Parquet's RLE / bit-packed hybrid runs of `width`-bit
/// values (dictionary indices, definition levels).
struct Hybrid {
    data: Bytes,
    /// Where the next run's header is.
    pos: usize,
    width: usize,
    run: Run,
}

/// The run being read.
enum Run {
    /// `left` more times `value`.
    Repeated { left: usize, value: u32 },
    /// Values `next..len` of groups packed from byte `start` of the data.
    Packed {
        start: usize,
        next: usize,
        len: usize,
    },
}

impl Hybrid {
    fn new(data: Bytes, width: usize) -> Option<Hybrid> {
        (width <= 32).then_some(Hybrid {
            data,
            pos: 0,
            width,
            run: Run::Repeated { left: 0, value: 0 },
        })
    }

    /// The next `n` values, each handed to `put` with its position
    /// (0..n); `None` when the runs end first.
    #[inline]
    fn take(&mut self, n: usize, mut put: impl FnMut(usize, u32)) -> Option<()> {
        let mut k = 0usize;
        while k < n {
            match &mut self.run {
                Run::Repeated { left, value } if *left > 0 => {
                    let m = (*left).min(n - k);
                    for i in 0..m {
                        put(k + i, *value);
                    }
                    *left -= m;
                    k += m;
                }
                Run::Packed { start, next, len } if *next < *len => {
                    // Value by value: whole groups go through `take_into`.
                    let m = (*len - *next).min(n - k);
                    let bits = &self.data[*start..];
                    for i in 0..m {
                        put(k + i, pick::packed_at(bits, self.width, *next + i));
                    }
                    *next += m;
                    k += m;
                }
                _ => self.next_run()?,
            }
        }
        Some(())
    }

    /// The next `out.len()` values into `out`; `None` when the runs end
    /// first. Whole groups of eight packed values are unpacked together.
    fn take_into(&mut self, out: &mut [u32]) -> Option<()> {
        let width = self.width;
        let mut k = 0usize;
        while k < out.len() {
            let rest = out.len() - k;
            let step = match self.run {
                Run::Packed { start, next, len } if next < len => {
                    let from = start + next / 8 * width;
                    let groups = match (next % 8, width) {
                        (0, 1..) => ((len - next).min(rest) / 8)
                            .min(self.data.len().saturating_sub(from) / width),
                        _ => 0,
                    };
                    if groups > 0 {
                        unpack_groups(width, &self.data[from..], &mut out[k..k + groups * 8]);
                        self.run = Run::Packed {
                            start,
                            next: next + groups * 8,
                            len,
                        };
                        k += groups * 8;
                        continue;
                    }
                    // Up to the next group, value by value.
                    (8 - next % 8).min(len - next)
                }
                Run::Repeated { left, .. } if left > 0 => left,
                _ => {
                    self.next_run()?;
                    continue;
                }
            };
            let step = step.min(rest);
            let into = &mut out[k..k + step];
            self.take(step, |i, v| into[i] = v)?;
            k += step;
        }
        Some(())
    }

    /// Reads the next run's header.
    fn next_run(&mut self) -> Option<()> {
        let (run, next) = pick::run_at(&self.data, self.pos, self.width)?;
        self.run = match run {
            pick::Run::Packed { values, bits } => Run::Packed {
                start: next - bits.len(),
                next: 0,
                len: values,
            },
            // A value wider than the runs' width (a definition level of 3
            // in a flat column) is not read here.
            pick::Run::Repeated { value, .. } if self.width < 32 && value >> self.width != 0 => {
                return None;
            }
            pick::Run::Repeated { count, value } => Run::Repeated { left: count, value },
        };
        // A run of nothing moves on; the data's end stops the reader.
        self.pos = next;
        Some(())
    }
}

/// `out.len() / 8` groups of eight `width`-bit values (1 to 32 bits), each
/// group `width` bytes, from the start of `bytes` into `out`.
fn unpack_groups(width: usize, bytes: &[u8], out: &mut [u32]) {
    macro_rules! widths {
        ($($w:literal)*) => {
            match width {
                $($w => unpack_groups_of::<$w>(bytes, out),)*
                _ => unreachable!("a packed width of 1 to 32 bits, not {width}"),
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32)
}

/// [`unpack_groups`] for one width, known when compiled: each value's
/// shift and byte are constants.
fn unpack_groups_of<const W: usize>(bytes: &[u8], out: &mut [u32]) {
    let groups = out.len() / 8;
    assert!(bytes.len() >= groups * W, "{groups} groups of {W} bits");
    // A group is read in place while 8 bytes past its end are in the data
    // (each value is an 8-byte read); the last ones from a padded copy.
    let direct = groups.min((bytes.len().saturating_sub(8)) / W);
    for (g, out) in out.chunks_exact_mut(8).enumerate().take(groups) {
        if g < direct {
            let group = &bytes[g * W..g * W + W + 8];
            unpack8::<W>(group, out);
        } else {
            let mut buf = [0u8; 40];
            buf[..W].copy_from_slice(&bytes[g * W..g * W + W]);
            unpack8::<W>(&buf, out);
        }
    }
}

/// Eight `W`-bit values from the start of `group` (which holds 8 bytes
/// past them) into `out`.
#[inline(always)]
fn unpack8<const W: usize>(group: &[u8], out: &mut [u32]) {
    let mask = if W == 32 {
        u64::from(u32::MAX)
    } else {
        (1u64 << W) - 1
    };
    let group = &group[..W + 8];
    for (i, v) in out.iter_mut().enumerate().take(8) {
        let bit = i * W;
        let word = u64::from_le_bytes(group[bit / 8..bit / 8 + 8].try_into().expect("8 bytes"));
        *v = ((word >> (bit % 8)) & mask) as u32;
    }
}

#[cfg(test)]
impl FeaturePages {
    /// Whether every batch so far came from the pages (no fallback to Arrow).
    pub(super) fn decoded_here(&self) -> bool {
        matches!(self.mode, Mode::Pages(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values as RLE / bit-packed hybrid runs of `width` bits: packed runs
    /// of 1 to 5 groups (the last one padded) between RLE runs of 1 to 20 values (which repeat the
    /// run's first value over the values they stand for).
    fn encode(values: &mut [u32], width: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::data::r#gen::Rng::new(seed);
        let mut data = Vec::new();
        let mut at = 0usize;
        while at < values.len() {
            let rest = values.len() - at;
            if rng.next_u64() % 3 == 0 {
                let n = (1 + rng.next_u64() as usize % 20).min(rest);
                let first = values[at];
                values[at..at + n].fill(first);
                data.push((n as u8) << 1);
                data.extend_from_slice(&values[at].to_le_bytes()[..width.div_ceil(8)]);
                at += n;
            } else {
                let groups = (1 + rng.next_u64() as usize % 5).min(rest.div_ceil(8));
                data.push(((groups as u8) << 1) | 1);
                let mut bits = vec![0u8; groups * width + 8];
                for k in 0..groups * 8 {
                    let v = u64::from(values.get(at + k).copied().unwrap_or(0));
                    let bit = k * width;
                    let word = u64::from_le_bytes(bits[bit / 8..bit / 8 + 8].try_into().unwrap());
                    let word = word | (v << (bit % 8));
                    bits[bit / 8..bit / 8 + 8].copy_from_slice(&word.to_le_bytes());
                }
                data.extend_from_slice(&bits[..groups * width]);
                at += groups * 8;
            }
        }
        data
    }

    #[test]
    fn hybrid_runs_unpacked_in_groups_give_every_value_at_every_width() {
        let mut rng = crate::data::r#gen::Rng::new(7);
        for width in 1..=32usize {
            let top = if width == 32 {
                u32::MAX
            } else {
                (1u32 << width) - 1
            };
            let mut values: Vec<u32> = (0..1_000).map(|_| (rng.next_u64() as u32) & top).collect();
            let data = encode(&mut values, width, width as u64);
            // The picker's reader, value by value, agrees on the encoding.
            for (i, &v) in values.iter().enumerate().step_by(37) {
                assert_eq!(
                    pick::hybrid_at(&data, width as u8, i),
                    Some(v),
                    "{width} bits, {i}"
                );
            }
            // Read in steps that start anywhere in a group.
            let mut hybrid = Hybrid::new(Bytes::from(data.clone()), width).unwrap();
            let mut got = Vec::new();
            let mut step = 1usize;
            while got.len() < values.len() {
                let n = step.min(values.len() - got.len());
                let mut out = vec![u32::MAX; n];
                hybrid.take_into(&mut out).unwrap();
                got.extend_from_slice(&out);
                step = step % 29 + 3;
            }
            assert_eq!(got, values, "{width} bits");
            // The last group's padding is at most seven values.
            let mut past = [0u32; 8];
            assert!(
                hybrid.take_into(&mut past).is_none(),
                "{width} bits: past the end"
            );
        }
    }

    #[test]
    fn a_repeated_value_wider_than_the_runs_width_is_not_read() {
        // Definition levels (1 bit): an RLE run of 4 x 1, then 4 x 3.
        let data = Bytes::from_static(&[4 << 1, 1, 4 << 1, 3]);
        let mut levels = Hybrid::new(data, 1).unwrap();
        let mut out = [0u32; 4];
        assert!(levels.take_into(&mut out).is_some());
        assert_eq!(out, [1; 4]);
        assert!(levels.take_into(&mut out).is_none());
    }
}
