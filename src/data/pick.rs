//! A few rows' features picked straight from their Parquet pages, for reads
//! of scattered rows (the spot check's sample): in a local file, a value of
//! a required `PLAIN` column is read where it lies ([`super::peek`]);
//! otherwise each row needs its column chunks' pages decompressed, but not
//! decoded into Arrow arrays of every row of its row group. A value is
//! found by walking the page's run headers (definition levels, dictionary
//! indices) to its position.
//!
//! Only flat `FLOAT` and `DOUBLE` columns, `PLAIN` or dictionary encoded,
//! required or optional, are picked here; anything else (another type or
//! encoding, a null, a value that is not finite where that is refused, a
//! page that does not parse) makes [`PartView::pick_features`] say `false`,
//! and the caller reads those rows through Arrow, which reads what this
//! does not and names every bad value.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::{Encoding, Type};
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::reader::ChunkReader;
use parquet::file::serialized_reader::SerializedPageReader;

use super::Source;
use super::decode::PartView;
use super::pages::PageFile;
use super::peek::{Peek, peek_chunk};
use super::span::{Spans, spans};

/// A local column chunk up to this size is read whole, with the chunks near
/// it, when a picked row falls in its row group; a larger one (several
/// pages, of which a row needs the one it is in and the dictionary) is read
/// a page at a time, and the pages before the rows picked are passed over
/// from their headers.
const PICK_SPAN_CHUNK_BYTES: u64 = 1 << 20;

/// One feature column as stored: its leaf in the file's schema, the bytes
/// of a value, and whether it is optional.
#[derive(Clone, Copy)]
pub(super) struct Leaf {
    pub(super) index: usize,
    pub(super) width: usize,
    pub(super) optional: bool,
}

impl PartView<'_> {
    /// Writes the features of this part's rows `at` (ascending) into `out`
    /// (row-major), picked from their pages; false when they must be read
    /// through Arrow instead (see the module's comment). `out` is then in
    /// an unspecified state.
    pub(super) fn pick_features(&self, at: &[u64], out: &mut [f32]) -> bool {
        let Some(leaves) = self.leaves() else {
            return false;
        };
        // The rows wanted in each row group, as (group, positions in `at`).
        let starts = &self.part.row_group_starts;
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (k, &row) in at.iter().enumerate() {
            let g = starts[1..].partition_point(|&end| end <= row);
            match groups.last_mut() {
                Some((last, ks)) if *last == g => ks.push(k),
                _ => groups.push((g, vec![k])),
            }
        }
        // Every (row group, feature) chunk still to read, as positions in
        // `groups` and `leaves`.
        let mut left: Vec<(usize, usize)> = (0..groups.len())
            .flat_map(|gi| (0..leaves.len()).map(move |j| (gi, j)))
            .collect();
        match &self.part.source {
            Source::Local(path) => {
                // A local file's values are first read where they lie; the
                // chunks that cannot be are read whole, a span at a time.
                if let Ok(file) = File::open(path).and_then(PageFile::new) {
                    let file = Arc::new(Peek::new(file));
                    left.retain(|&c| {
                        !self.pick_one(
                            c,
                            &leaves,
                            &groups,
                            at,
                            out,
                            |chunk, n, leaf, rows, check| {
                                peek_chunk(&file, chunk, n, leaf, rows, check)
                            },
                        )
                    });
                }
                if left.is_empty() {
                    return true;
                }
                let planned = spans(
                    self.chunk_ranges(&left, &groups, &leaves),
                    PICK_SPAN_CHUNK_BYTES,
                );
                match File::open(path).and_then(|file| Spans::new(file, planned)) {
                    Ok(file) => self.pick_from(&Arc::new(file), &leaves, &groups, &left, at, out),
                    Err(_) => false,
                }
            }
            Source::Remote(object) => {
                match object.prefetch(self.chunk_ranges(&left, &groups, &leaves)) {
                    Ok(held) => self.pick_from(&Arc::new(held), &leaves, &groups, &left, at, out),
                    Err(_) => false,
                }
            }
        }
    }

    /// The byte ranges of the column chunks `chunks` ((row group, feature)
    /// positions in `groups` and `leaves`).
    fn chunk_ranges(
        &self,
        chunks: &[(usize, usize)],
        groups: &[(usize, Vec<usize>)],
        leaves: &[Leaf],
    ) -> Vec<std::ops::Range<u64>> {
        let metadata = self.part.metadata.metadata();
        chunks
            .iter()
            .map(|&(gi, j)| {
                let (start, len) = metadata
                    .row_group(groups[gi].0)
                    .column(leaves[j].index)
                    .byte_range();
                start..start + len
            })
            .collect()
    }

    fn pick_from<R: ChunkReader + 'static>(
        &self,
        reader: &Arc<R>,
        leaves: &[Leaf],
        groups: &[(usize, Vec<usize>)],
        chunks: &[(usize, usize)],
        at: &[u64],
        out: &mut [f32],
    ) -> bool {
        chunks.iter().all(|&c| {
            self.pick_one(c, leaves, groups, at, out, |chunk, n, leaf, rows, check| {
                pick_chunk(reader, chunk, n, leaf, rows, check)
            })
        })
    }

    /// The values of chunk `(gi, j)` (row group `groups[gi]`, feature
    /// `leaves[j]`) at its rows of `at`, read by `read` (as [`pick_chunk`]
    /// and [`peek_chunk`] read a chunk) into `out`; false when `read`
    /// cannot.
    fn pick_one(
        &self,
        (gi, j): (usize, usize),
        leaves: &[Leaf],
        groups: &[(usize, Vec<usize>)],
        at: &[u64],
        out: &mut [f32],
        read: impl FnOnce(&ColumnChunkMetaData, usize, Leaf, &[usize], bool) -> Option<Vec<f32>>,
    ) -> bool {
        let (g, ks) = &groups[gi];
        let group = self.part.metadata.metadata().row_group(*g);
        let first = self.part.row_group_starts[*g];
        let rows: Vec<usize> = ks.iter().map(|&k| (at[k] - first) as usize).collect();
        let chunk = group.column(leaves[j].index);
        let check = !self.ds.nulls_as_nan;
        let Some(values) = read(chunk, group.num_rows() as usize, leaves[j], &rows, check) else {
            return false;
        };
        for (k, v) in ks.iter().zip(values) {
            out[k * leaves.len() + j] = v;
        }
        true
    }

    /// The feature columns' leaves, when every one is a flat `FLOAT` or
    /// `DOUBLE` column of the file whose root index is its leaf index.
    pub(super) fn leaves(&self) -> Option<Vec<Leaf>> {
        let schema = self.part.metadata.metadata().file_metadata().schema_descr();
        let roots = self
            .projection(&self.ds.features.iter().collect::<Vec<_>>())
            .ok()?;
        if roots.len() != self.ds.features.len() {
            return None; // a folder column
        }
        roots
            .into_iter()
            .map(|index| {
                let leaf = (index < schema.num_columns()).then(|| schema.column(index))?;
                let root = schema.get_column_root_idx(index);
                let width = match leaf.physical_type() {
                    Type::FLOAT => 4,
                    Type::DOUBLE => 8,
                    _ => return None,
                };
                let flat =
                    root == index && leaf.max_rep_level() == 0 && leaf.path().parts().len() == 1;
                (flat && leaf.max_def_level() <= 1).then_some(Leaf {
                    index,
                    width,
                    optional: leaf.max_def_level() == 1,
                })
            })
            .collect()
    }
}

/// The values at `rows` (ascending, within the row group of `chunk`, which
/// holds `group_rows` rows), in that order; `None` for anything
/// [`PartView::pick_features`] leaves to Arrow.
fn pick_chunk<R: ChunkReader + 'static>(
    reader: &Arc<R>,
    chunk: &ColumnChunkMetaData,
    group_rows: usize,
    leaf: Leaf,
    rows: &[usize],
    check: bool,
) -> Option<Vec<f32>> {
    let mut pages = SerializedPageReader::new(reader.clone(), chunk, group_rows, None).ok()?;
    let mut dictionary: Option<Bytes> = None;
    let mut picked = Vec::with_capacity(rows.len());
    // The row of the page's first value.
    let mut first = 0usize;
    while picked.len() < rows.len() {
        // A data page wholly before the next row wanted is passed over from
        // its header, not decompressed: a row group of many pages gives up
        // only the pages its rows are in (and the dictionary).
        skip_pages_before(&mut pages, &mut first, rows[picked.len()])?;
        let page = pages.get_next_page().ok()??;
        let (n, levels, values, encoding) = match &page {
            Page::DictionaryPage { buf, encoding, .. } => {
                if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
                    return None;
                }
                dictionary = Some(buf.clone());
                continue;
            }
            page => {
                let parts = data_page_parts(page, leaf)?;
                let buf = page.buffer();
                let levels = parts.levels.map(|r| &buf[r]);
                (parts.rows, levels, &buf[parts.values], parts.encoding)
            }
        };
        while let Some(&row) = rows.get(picked.len()).filter(|&&r| r < first + n) {
            let i = row - first;
            // The value's index among the page's stored (non-null) values.
            let stored = match levels {
                Some(levels) => match defined_at(levels, i)? {
                    (true, before) => before,
                    (false, _) => return None,
                },
                None => i,
            };
            let v = match encoding {
                Encoding::PLAIN => value(values, leaf.width, stored)?,
                Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY => {
                    let width = *values.first()?;
                    let index = hybrid_at(values.get(1..)?, width, stored)?;
                    value(dictionary.as_deref()?, leaf.width, index as usize)?
                }
                _ => return None,
            };
            if check && !v.is_finite() {
                return None;
            }
            picked.push(v);
        }
        first += n;
    }
    Some(picked)
}

/// Passes over the data pages of `pages` that end before row `next`, from
/// their headers; `first` is the row of the next page's first value.
/// Whether the page after them is a dictionary page; `None` when the pages
/// end first or a header does not parse.
pub(super) fn skip_pages_before(
    pages: &mut impl PageReader,
    first: &mut usize,
    next: usize,
) -> Option<bool> {
    loop {
        match pages.peek_next_page().ok()? {
            Some(meta) if !meta.is_dict => match meta.num_rows.or(meta.num_levels) {
                Some(n) if *first + n <= next => {
                    pages.skip_next_page().ok()?;
                    *first += n;
                }
                _ => return Some(false),
            },
            Some(_) => return Some(true),
            None => return None,
        }
    }
}

/// Value `i` of plain little-endian values `width` bytes wide, as f32.
fn value(bytes: &[u8], width: usize, i: usize) -> Option<f32> {
    let b = bytes.get(i * width..(i + 1) * width)?;
    Some(match width {
        4 => f32::from_le_bytes(b.try_into().ok()?),
        _ => f64::from_le_bytes(b.try_into().ok()?) as f32,
    })
}

/// An unsigned LEB128 integer at the start of `data`, and its length.
pub(super) fn uleb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// A run of an RLE / bit-packed hybrid encoding of `width`-bit values.
pub(super) enum Run<'a> {
    /// `values` values (groups of eight) packed into `bits`.
    Packed { values: usize, bits: &'a [u8] },
    /// `count` times `value` (stored little-endian, `width` rounded up to
    /// bytes).
    Repeated { count: usize, value: u32 },
}

/// The run at `data[pos..]` (of values 0 to 32 bits wide), and where the
/// next one begins; `None` when it is cut short.
pub(super) fn run_at(data: &[u8], pos: usize, width: usize) -> Option<(Run<'_>, usize)> {
    let (header, used) = uleb128(data.get(pos..)?)?;
    let pos = pos + used;
    let count = usize::try_from(header >> 1).ok()?;
    if header & 1 == 1 {
        let bits = data.get(pos..pos.checked_add(count.checked_mul(width)?)?)?;
        let values = count.checked_mul(8)?;
        Some((Run::Packed { values, bits }, pos + bits.len()))
    } else {
        let stored = data.get(pos..pos + width.div_ceil(8))?;
        let mut word = [0u8; 4];
        word.get_mut(..stored.len())?.copy_from_slice(stored);
        let value = u32::from_le_bytes(word);
        Some((Run::Repeated { count, value }, pos + stored.len()))
    }
}

/// Value `i` of `width`-bit values packed into `bits` (which hold it).
pub(super) fn packed_at(bits: &[u8], width: usize, i: usize) -> u32 {
    let mask = (1u64 << width) - 1;
    let bit = i * width;
    let from = &bits[bit / 8..];
    let mut word = [0u8; 8];
    let take = from.len().min(8);
    word[..take].copy_from_slice(&from[..take]);
    ((u64::from_le_bytes(word) >> (bit % 8)) & mask) as u32
}

/// Where a data page's definition levels and stored values lie in its
/// buffer, how many rows it holds and how its values are encoded.
pub(super) struct PageParts {
    pub(super) rows: usize,
    /// Present for an optional column.
    pub(super) levels: Option<std::ops::Range<usize>>,
    pub(super) values: std::ops::Range<usize>,
    pub(super) encoding: Encoding,
}

/// The parts of a data page (v1 or v2) of `leaf`'s flat column; `None` for
/// a dictionary page, repetition levels, definition levels not RLE
/// encoded, or lengths past the buffer.
pub(super) fn data_page_parts(page: &Page, leaf: Leaf) -> Option<PageParts> {
    match page {
        Page::DataPage {
            buf,
            num_values,
            encoding,
            def_level_encoding,
            ..
        } => {
            let (levels, values) = if leaf.optional {
                if *def_level_encoding != Encoding::RLE {
                    return None;
                }
                let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
                let end = 4usize.checked_add(len)?;
                (end <= buf.len()).then_some(())?;
                (Some(4..end), end..buf.len())
            } else {
                (None, 0..buf.len())
            };
            Some(PageParts {
                rows: *num_values as usize,
                levels,
                values,
                encoding: *encoding,
            })
        }
        Page::DataPageV2 {
            buf,
            num_rows,
            encoding,
            def_levels_byte_len,
            rep_levels_byte_len,
            ..
        } => {
            let def = *def_levels_byte_len as usize;
            if *rep_levels_byte_len != 0 || def > buf.len() {
                return None;
            }
            Some(PageParts {
                rows: *num_rows as usize,
                levels: leaf.optional.then_some(0..def),
                values: def..buf.len(),
                encoding: *encoding,
            })
        }
        Page::DictionaryPage { .. } => None,
    }
}

/// Value `i` of RLE / bit-packed hybrid runs of `width`-bit values.
pub(super) fn hybrid_at(data: &[u8], width: u8, mut i: usize) -> Option<u32> {
    let width = usize::from(width);
    if width > 32 {
        return None;
    }
    let mut pos = 0usize;
    loop {
        let (run, next) = run_at(data, pos, width)?;
        match run {
            Run::Packed { values, bits } if i < values => return Some(packed_at(bits, width, i)),
            Run::Repeated { count, value } if i < count => return Some(value),
            Run::Packed { values: n, .. } | Run::Repeated { count: n, .. } => i -= n,
        }
        pos = next;
    }
}

/// Whether value `i` of a page's definition levels (1-bit hybrid runs) is
/// defined, and how many values before it are (its index among the page's
/// stored values).
fn defined_at(levels: &[u8], mut i: usize) -> Option<(bool, usize)> {
    let ones = |bytes: &[u8]| bytes.iter().map(|b| b.count_ones() as usize).sum::<usize>();
    let mut before = 0usize;
    let mut pos = 0usize;
    loop {
        let (run, next) = run_at(levels, pos, 1)?;
        match run {
            Run::Packed { values, bits } if i < values => {
                let partial = (bits[i / 8] & ((1u8 << (i % 8)) - 1)).count_ones() as usize;
                let defined = bits[i / 8] >> (i % 8) & 1 == 1;
                return Some((defined, before + ones(&bits[..i / 8]) + partial));
            }
            Run::Packed { values, bits } => {
                before += ones(bits);
                i -= values;
            }
            Run::Repeated { count, value } => {
                let defined = value & 1 == 1;
                if i < count {
                    return Some((defined, before + if defined { i } else { 0 }));
                }
                before += if defined { count } else { 0 };
                i -= count;
            }
        }
        pos = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_runs_give_each_value_at_its_position() {
        // An RLE run of 3 x 5, a bit-packed group of 0..8 at width 3, an
        // RLE run of 2 x 1 (width 3: one byte a value).
        let mut data = vec![3 << 1, 5];
        data.push((1 << 1) | 1);
        let mut bits = 0u32;
        for (k, v) in (0u32..8).enumerate() {
            bits |= v << (3 * k);
        }
        data.extend_from_slice(&bits.to_le_bytes()[..3]);
        data.extend_from_slice(&[2 << 1, 1]);
        let want = [5, 5, 5, 0, 1, 2, 3, 4, 5, 6, 7, 1, 1];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(hybrid_at(&data, 3, i), Some(*w), "value {i}");
        }
        assert_eq!(hybrid_at(&data, 3, want.len()), None, "past the end");
        assert_eq!(hybrid_at(&data[..4], 3, 5), None, "a cut group");
        // Width 0: one dictionary entry.
        assert_eq!(hybrid_at(&[4 << 1], 0, 3), Some(0));
    }

    #[test]
    fn definition_levels_count_the_stored_values_before_each_row() {
        // An RLE run of 3 defined, a bit-packed group (1,0,1,1,0,0,0,1), an
        // RLE run of 2 nulls, an RLE run of 1 defined.
        let levels = [3 << 1, 1, (1 << 1) | 1, 0b1000_1101, 2 << 1, 0, 1 << 1, 1];
        let defined = [1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1];
        let mut before = 0;
        for (i, &d) in defined.iter().enumerate() {
            assert_eq!(defined_at(&levels, i), Some((d == 1, before)), "row {i}");
            before += d;
        }
        assert_eq!(defined_at(&levels, defined.len()), None);
    }
}
