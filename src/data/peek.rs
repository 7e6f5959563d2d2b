//! A few values of a local file's `PLAIN` pages read where they lie, not
//! with their pages: for the spot check's scattered rows, whose pages would
//! otherwise each be read and decompressed whole for one value (a sample
//! of 200 rows of 64 float features in 1 MiB pages: up to 12.8 GB read for
//! 51 KB of values).
//!
//! A page's header is parsed by Parquet's own page reader, over a reader
//! that hands it zeros for the page's bytes and notes where they lie in
//! the file (the chunk's metadata says "uncompressed", so nothing is
//! decompressed). A value of an uncompressed page is then read at its
//! offset; in a snappy page, the stream's element tags are read from the
//! start of the page until the literal holding the value, which is read
//! from it: values drawn from a continuous distribution barely compress,
//! and snappy stores each 64 KiB block of them as one literal.
//!
//! Only required flat columns with no dictionary page, `PLAIN` data pages
//! (v1, or v2 without levels) and pages that carry no CRC (the page reader
//! checks a CRC against the zeros and fails) are read here;
//! for anything else, a snappy chunk shrunk by a tenth or more, a value
//! that falls in one of snappy's copies rather than a literal, or more than
//! [`MAX_ELEMENTS`] elements before it, [`peek_chunk`] says `None` and the
//! caller reads the chunk's pages.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parquet::basic::{Compression, Encoding};
use parquet::column::page::{Page, PageReader};
use parquet::errors::ParquetError;
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;

use super::pages::{PageFile, PageFileReader};
use super::pick::{Leaf, data_page_parts, skip_pages_before, uleb128};

/// A page larger than this is read with its page.
const MAX_PAGE_BYTES: usize = 1 << 20;
/// The snappy elements walked to a value, at most: a page of values that
/// compress is read whole instead.
pub(super) const MAX_ELEMENTS: usize = 64;

/// What a page's body is, in place of its bytes.
static ZEROS: [u8; MAX_PAGE_BYTES] = [0; MAX_PAGE_BYTES];

/// A local file for Parquet's page reader: headers read as asked, each
/// page's bytes not read but noted.
pub(super) struct Peek {
    file: PageFile,
    /// Where the last page handed out lies: (first byte, length).
    body: Mutex<Option<(u64, usize)>>,
    /// The bytes last read where a page header starts, and where they
    /// lie: the header (a few dozen bytes, more with statistics), then the
    /// snappy stream's length and first element tag, which the walk to a
    /// value reads next. One read instead of three for each chunk the
    /// spot check picks from (200 rows of 64 features: ~4,000 chunks).
    head: Head,
}

/// Bytes read where a page header starts, and where they lie.
type Head = Arc<Mutex<(u64, Vec<u8>)>>;

impl Peek {
    pub(super) fn new(file: PageFile) -> Peek {
        Peek {
            file,
            body: Mutex::new(None),
            head: Arc::new(Mutex::new((0, Vec::new()))),
        }
    }

    fn take_body(&self) -> Option<(u64, usize)> {
        self.body.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// `buf.len()` bytes at `at`: from the last header's bytes when they
    /// hold them, else read.
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> Option<()> {
        {
            let head = self.head.lock().unwrap_or_else(|p| p.into_inner());
            let from = at.checked_sub(head.0).and_then(|d| usize::try_from(d).ok());
            if let Some(held) = from.and_then(|f| head.1.get(f..f.checked_add(buf.len())?)) {
                buf.copy_from_slice(held);
                return Some(());
            }
        }
        self.file.read_exact_at(buf, at)
    }
}

impl Length for Peek {
    fn len(&self) -> u64 {
        self.file.len()
    }
}

/// The file from a position on, as [`PageFile`] reads it for a page
/// header (a buffer's worth at a time, nothing until asked), whose first
/// buffer is kept as [`Peek`]'s head.
pub(super) struct HeadReader {
    inner: BufReader<PageFileReader>,
    start: u64,
    head: Option<Head>,
}

impl Read for HeadReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(head) = self.head.take() {
            let first = self.inner.fill_buf()?.to_vec();
            *head.lock().unwrap_or_else(|p| p.into_inner()) = (self.start, first);
        }
        self.inner.read(buf)
    }
}

impl ChunkReader for Peek {
    type T = HeadReader;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(HeadReader {
            inner: self.file.get_read(start)?,
            start,
            head: Some(self.head.clone()),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        if length > MAX_PAGE_BYTES {
            return Err(ParquetError::General(
                "a page too large to peek into".into(),
            ));
        }
        *self.body.lock().unwrap_or_else(|p| p.into_inner()) = Some((start, length));
        Ok(Bytes::from_static(&ZEROS[..length]))
    }
}

/// The values at `rows` (ascending, within the row group of `chunk`, which
/// holds `group_rows` rows), in that order, each read where it lies;
/// `None` for a chunk this module does not read (see the module's
/// comment), or a value that is not finite when `check`.
pub(super) fn peek_chunk(
    file: &Arc<Peek>,
    chunk: &ColumnChunkMetaData,
    group_rows: usize,
    leaf: Leaf,
    rows: &[usize],
    check: bool,
) -> Option<Vec<f32>> {
    if leaf.optional || chunk.dictionary_page_offset().is_some() {
        return None;
    }
    let snappy = match chunk.compression() {
        Compression::UNCOMPRESSED => false,
        // A chunk snappy shrank by a tenth or more: its values lie in copies
        // more than in literals, and walking to them would cost more than
        // reading its pages.
        Compression::SNAPPY
            if chunk.compressed_size().saturating_mul(10)
                <= chunk.uncompressed_size().saturating_mul(9) =>
        {
            return None;
        }
        Compression::SNAPPY => true,
        _ => return None,
    };
    let raw = chunk
        .clone()
        .into_builder()
        .set_compression(Compression::UNCOMPRESSED)
        .build()
        .ok()?;
    let mut pages = SerializedPageReader::new(file.clone(), &raw, group_rows, None).ok()?;
    let mut picked = Vec::with_capacity(rows.len());
    // The row of the page's first value.
    let mut first = 0usize;
    while picked.len() < rows.len() {
        if skip_pages_before(&mut pages, &mut first, rows[picked.len()])? {
            return None;
        }
        file.take_body();
        let page = pages.get_next_page().ok()??;
        let (start, len) = file.take_body()?;
        let parts = data_page_parts(&page, leaf)?;
        let compressed = match &page {
            Page::DataPage { .. } => snappy,
            Page::DataPageV2 { is_compressed, .. } => snappy && *is_compressed,
            Page::DictionaryPage { .. } => return None,
        };
        if parts.encoding != Encoding::PLAIN || parts.levels.is_some() || len != page.buffer().len()
        {
            return None;
        }
        let values = start + parts.values.start as u64;
        let values_len = parts.values.len();
        let mut stream = compressed.then(|| Stream::new(file, values, values_len));
        while let Some(&row) = rows.get(picked.len()).filter(|&&r| r < first + parts.rows) {
            let at = (row - first).checked_mul(leaf.width)?;
            let offset = match &mut stream {
                Some(stream) => stream.literal_at(at, leaf.width)?,
                None => (at + leaf.width <= values_len).then_some(values + at as u64)?,
            };
            let mut b = [0u8; 8];
            file.read_exact_at(&mut b[..leaf.width], offset)?;
            let v = match leaf.width {
                4 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                _ => f64::from_le_bytes(b) as f32,
            };
            if check && !v.is_finite() {
                return None;
            }
            picked.push(v);
        }
        first += parts.rows;
    }
    Some(picked)
}

/// A snappy stream in a file, walked element by element from its start.
struct Stream<'f> {
    file: &'f Peek,
    /// The stream's first byte in the file, and its length.
    start: u64,
    len: usize,
    /// The next element's position in the stream (`None` before the
    /// preamble is read) and the first output byte it gives.
    pos: Option<usize>,
    out: usize,
    /// The last element read: its output bytes and, for a literal, where
    /// they lie in the file.
    last: Option<(std::ops::Range<usize>, Option<u64>)>,
    walked: usize,
}

impl<'f> Stream<'f> {
    fn new(file: &'f Peek, start: u64, len: usize) -> Stream<'f> {
        Stream {
            file,
            start,
            len,
            pos: None,
            out: 0,
            last: None,
            walked: 0,
        }
    }

    /// Where in the file output bytes `at..at + width` lie, when one
    /// literal holds them all; `at` never goes back (the rows ascend).
    fn literal_at(&mut self, at: usize, width: usize) -> Option<u64> {
        loop {
            if let Some((out, file_at)) = &self.last
                && at < out.end
            {
                let inside = out.start <= at && at + width <= out.end;
                return inside.then_some((*file_at)? + (at - out.start) as u64);
            }
            self.next_element()?;
        }
    }

    /// Reads the next element's tag (after the preamble, the output's
    /// length, the first time).
    fn next_element(&mut self) -> Option<()> {
        self.walked += 1;
        if self.walked > MAX_ELEMENTS {
            return None;
        }
        let pos = match self.pos {
            Some(pos) => pos,
            None => {
                let mut head = [0u8; 5];
                let n = head.len().min(self.len);
                self.file.read_exact_at(&mut head[..n], self.start)?;
                uleb128(&head[..n])?.1
            }
        };
        let mut tag = [0u8; 5];
        let n = tag.len().min(self.len.checked_sub(pos)?);
        (n > 0).then_some(())?;
        self.file
            .read_exact_at(&mut tag[..n], self.start + pos as u64)?;
        let (len, head, literal) = match tag[0] & 3 {
            0 => {
                let code = usize::from(tag[0] >> 2);
                if code < 60 {
                    (code + 1, 1, true)
                } else {
                    let bytes = code - 59;
                    let mut le = [0u8; 4];
                    le[..bytes].copy_from_slice(tag.get(1..1 + bytes)?);
                    (u32::from_le_bytes(le) as usize + 1, 1 + bytes, true)
                }
            }
            1 => (usize::from((tag[0] >> 2) & 7) + 4, 2, false),
            2 => (usize::from(tag[0] >> 2) + 1, 3, false),
            _ => (usize::from(tag[0] >> 2) + 1, 5, false),
        };
        let next = pos.checked_add(head)?;
        let file_at = literal.then_some(self.start + next as u64);
        let next = if literal {
            next.checked_add(len)?
        } else {
            next
        };
        (next <= self.len).then_some(())?;
        self.last = Some((self.out..self.out + len, file_at));
        self.out += len;
        self.pos = Some(next);
        Some(())
    }
}
