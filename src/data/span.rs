//! A local part file served to the Parquet reader a span at a time: the
//! column chunks a read needs, merged where they lie close together, each
//! span read with one call when a read first falls in it, the last one held
//! in memory. The reader otherwise asks the file for every page twice (its
//! header through a buffered reader, then its bytes), each a few system
//! calls and a copy of its own. Column chunks left out of the spans (the
//! scattered rows' large chunks, of which a row needs one page) are read
//! as the reader asks: each page header through a small buffered reader,
//! and only the bytes of the pages it decodes.

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;
use parquet::errors::{ParquetError, Result};
use parquet::file::reader::{ChunkReader, Length};

use super::pages::{PageFile, PageFileReader};

/// Column chunks closer than this are read as one span (the bytes between
/// them are read for nothing).
pub(super) const SPAN_GAP_BYTES: u64 = 1 << 20;
/// A span never grows past this by merging; a column chunk larger than it
/// is read as the reader asks, a page at a time.
pub(super) const SPAN_MAX_BYTES: u64 = 8 << 20;
/// `ranges` (column chunks' bytes) merged into spans: sorted, those at most
/// [`SPAN_GAP_BYTES`] apart joined while the span stays within
/// [`SPAN_MAX_BYTES`]; a range larger than `max_chunk` (or than
/// [`SPAN_MAX_BYTES`]) is left out, to be read a page at a time.
pub(super) fn spans(mut ranges: Vec<Range<u64>>, max_chunk: u64) -> Vec<Range<u64>> {
    let max_chunk = max_chunk.min(SPAN_MAX_BYTES);
    ranges.retain(|r| r.end > r.start && r.end - r.start <= max_chunk);
    join(ranges, SPAN_GAP_BYTES, SPAN_MAX_BYTES)
}

/// `ranges` sorted, those at most `gap` bytes apart joined while the joined
/// range stays within `max_len` bytes.
pub(super) fn join(mut ranges: Vec<Range<u64>>, gap: u64, max_len: u64) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last)
                if r.start <= last.end.saturating_add(gap)
                    && r.end.max(last.end) - last.start <= max_len =>
            {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

/// Bytes `start..` of a file, read with one call.
struct Held {
    start: u64,
    bytes: Bytes,
}

impl Held {
    fn slice(&self, start: u64, length: usize) -> Option<Bytes> {
        let from = usize::try_from(start.checked_sub(self.start)?).ok()?;
        let end = from.checked_add(length)?;
        (end <= self.bytes.len()).then(|| self.bytes.slice(from..end))
    }
}

/// A local part file read in the spans [`spans`] planned.
pub(super) struct Spans {
    /// The file, read at positions: each span with one call, and outside
    /// the spans as the reader asks.
    file: PageFile,
    spans: Vec<Range<u64>>,
    /// The span read last.
    held: Mutex<Option<Held>>,
}

impl Spans {
    pub fn new(file: File, spans: Vec<Range<u64>>) -> std::io::Result<Spans> {
        Ok(Spans {
            file: PageFile::new(file)?,
            spans,
            held: Mutex::new(None),
        })
    }

    /// Bytes `start..start + length`: from the span held, else from the
    /// planned span holding them (read and held), else read as asked.
    fn bytes(&self, start: u64, length: usize) -> Result<Bytes> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = held.as_ref().and_then(|h| h.slice(start, length)) {
            return Ok(b);
        }
        let end = start.saturating_add(length as u64);
        let Some(span) = self
            .spans
            .iter()
            .find(|s| s.start <= start && end <= s.end)
            .cloned()
        else {
            return self.file.get_bytes(start, length);
        };
        // The last span's memory goes before the next is read: one span
        // held at a time, not two.
        *held = None;
        let span_len = usize::try_from(span.end - span.start)
            .map_err(|_| ParquetError::General(format!("a span of {span:?} is too long")))?;
        // Read with one call into a fresh buffer, not zeroed first; spans
        // are at most SPAN_MAX_BYTES, a size the C allocator serves from
        // memory it kept rather than fresh pages once one such block was
        // freed.
        let h = Held {
            start: span.start,
            bytes: self.file.get_bytes(span.start, span_len)?,
        };
        let b = h.slice(start, length).expect("the span holds the range");
        *held = Some(h);
        Ok(b)
    }
}

impl Length for Spans {
    fn len(&self) -> u64 {
        self.file.len()
    }
}

/// What [`Spans::get_read`] reads from: the rest of a span, or the file
/// from a position on.
pub(super) enum SpanRead {
    Held(bytes::buf::Reader<Bytes>),
    File(std::io::BufReader<PageFileReader>),
}

impl Read for SpanRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            SpanRead::Held(r) => r.read(buf),
            SpanRead::File(r) => r.read(buf),
        }
    }
}

impl ChunkReader for Spans {
    type T = SpanRead;

    fn get_read(&self, start: u64) -> Result<Self::T> {
        match self
            .spans
            .iter()
            .find(|s| s.start <= start && start < s.end)
        {
            Some(s) => {
                let length = usize::try_from(s.end - start)
                    .map_err(|_| ParquetError::General(format!("a read at {start} is too long")))?;
                Ok(SpanRead::Held(bytes::Buf::reader(
                    self.bytes(start, length)?,
                )))
            }
            // A page header outside the spans: read a little at a time.
            None => Ok(SpanRead::File(self.file.get_read(start)?)),
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes> {
        self.bytes(start, length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_chunks_merge_into_spans_within_the_limit() {
        let mb = 1u64 << 20;
        let ranges = vec![
            10 * mb..11 * mb,
            0..mb,
            mb + 100..2 * mb,                        // 100 bytes after the first
            4 * mb..5 * mb,                          // 2 MiB after: a span of its own
            100 * mb..100 * mb + SPAN_MAX_BYTES + 1, // too large to hold
            11 * mb..11 * mb,                        // empty
        ];
        assert_eq!(
            spans(ranges.clone(), u64::MAX),
            vec![0..2 * mb, 4 * mb..5 * mb, 10 * mb..11 * mb]
        );
        // Chunks past a smaller limit are left out too.
        assert_eq!(spans(ranges, mb - 100), vec![mb + 100..2 * mb]);
        // Adjacent chunks stop merging at the limit.
        let chunk = SPAN_MAX_BYTES / 2;
        let ranges: Vec<_> = (0..5).map(|i| i * chunk..(i + 1) * chunk).collect();
        assert_eq!(
            spans(ranges, u64::MAX),
            vec![0..2 * chunk, 2 * chunk..4 * chunk, 4 * chunk..5 * chunk]
        );
    }

    #[test]
    fn reads_inside_and_outside_the_spans_give_the_file_s_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let reader = Spans::new(
            File::open(&path).unwrap(),
            vec![1_000..50_000, 60_000..70_000],
        )
        .unwrap();
        for (start, len) in [
            (1_000, 10),
            (49_990, 10),
            (60_000, 10_000),
            (2_000, 100),
            (49_999, 2),  // across a span's end
            (100_000, 5), // outside every span
            (199_990, 10),
        ] {
            let got = reader.get_bytes(start, len).unwrap();
            assert_eq!(
                &got[..],
                &data[start as usize..start as usize + len],
                "{start}+{len}"
            );
        }
        let mut rest = Vec::new();
        reader
            .get_read(65_000)
            .unwrap()
            .read_to_end(&mut rest)
            .unwrap();
        assert_eq!(rest, &data[65_000..70_000]);
        let mut tail = Vec::new();
        reader
            .get_read(199_000)
            .unwrap()
            .read_to_end(&mut tail)
            .unwrap();
        assert_eq!(tail, &data[199_000..]);
        // Past the end: an error, not a short read.
        assert!(reader.get_bytes(199_990, 11).is_err());
    }
}
