//! `herd store export`: one version of the store as a Parquet or JSON Lines
//! file, for tables, notebooks and other stores.
//!
//! The scan runs in one read transaction (the version cannot change under it)
//! and streams: values go out in batches of [`BATCH_ROWS`] entities, Parquet
//! row groups hold at most [`ROW_GROUP_ROWS`], so memory stays a few batches
//! whatever the version's size. Parquet encoding runs on a second thread fed
//! through a channel of [`BATCHES_IN_FLIGHT`] batches. The file is written
//! beside its destination under a new `.partial` name of its own (created
//! exclusively: a link planted there is not followed, and two exports to one
//! path do not share a file) and renamed when complete: a failed export
//! leaves no half file behind. A destination that is not a regular file
//! (a symlink, a device, a pipe) is refused rather than replaced.
//!
//! Parquet columns: `id` (uint64 for integer ids, string otherwise),
//! `version` (uint64), `model_version` (string), `timestamp` (uint64, unix
//! seconds), `ttl` (uint64, seconds), then `top_k`
//! (list<struct<item: uint32, score: float32>>) for top-K values or `scores`
//! (list<float32>). JSON Lines: one `herd store get --json` object a line.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use arrow_array::builder::StringBuilder;
use arrow_array::{
    ArrayRef, Float32Array, ListArray, RecordBatch, StringArray, StructArray, UInt32Array,
    UInt64Array,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowLeafColumn, compute_leaves};
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::json::{self, IdRef};
use super::value::{HEADER_LEN, ValueKind, ValueRef};
use super::{IdKind, Snapshot, Store};

/// Entities per batch handed from the scan to the writer.
pub const BATCH_ROWS: usize = 8_192;
/// Batches between the scan and the Parquet encoder at most.
pub const BATCHES_IN_FLIGHT: usize = 4;
/// Entities per Parquet row group (a row group is buffered whole before it is
/// written: about 55 MB of top-100 values).
pub const ROW_GROUP_ROWS: usize = 65_536;
/// JSON Lines are written out whenever this many bytes are pending.
const JSONL_FLUSH_BYTES: usize = 1 << 20;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] super::Error),
    #[error("store {}: no live version to export; pass --version N (see `herd store versions`)", store.display())]
    NoLive { store: PathBuf },
    #[error("{}: {context}: {source}", path.display())]
    Io {
        path: PathBuf,
        context: &'static str,
        source: std::io::Error,
    },
    #[error("{}: writing Parquet: {source}", path.display())]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("store {}: v{version}: {detail}", store.display())]
    Shape {
        store: PathBuf,
        version: u64,
        detail: String,
    },
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Jsonl,
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub version: u64,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Writes `version` (default: the live one) of `store` to `out` in `format`.
/// `now` (unix seconds) decides the JSON `stale` field. `out` = `-` writes
/// JSON Lines to standard output.
pub fn export(
    store: &Store,
    version: Option<u64>,
    format: Format,
    out: &Path,
    now: u64,
) -> Result<Summary> {
    let started = Instant::now();
    let to_stdout = out == Path::new("-");
    if to_stdout && format == Format::Parquet {
        return Err(Error::Io {
            path: out.to_path_buf(),
            context: "Parquet needs a file (standard output is for --format jsonl)",
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    let io = |path: &Path, context, source| Error::Io {
        path: path.to_path_buf(),
        context,
        source,
    };
    if !to_stdout {
        refuse_special(out)?;
    }
    let (mut partial, mut created) = (PathBuf::new(), None);
    if !to_stdout {
        let (path, file) = create_partial(out)?;
        (partial, created) = (path, Some(file));
    }
    let result = store.snapshot(|snap| {
        Ok(match scan_setup(store, snap, version) {
            Err(e) => Err(e),
            Ok(setup) => {
                let version = setup.version;
                if to_stdout {
                    let stdout = std::io::stdout();
                    write_jsonl(snap, setup, stdout.lock(), out, now)
                } else {
                    let file = created.take().expect("the export file is created once");
                    match format {
                        Format::Jsonl => write_jsonl(snap, setup, file, &partial, now),
                        Format::Parquet => write_parquet(snap, setup, file, &partial),
                    }
                }
                .map(|rows| (version, rows))
            }
        })
    });
    let outcome = result.map_err(Error::from).and_then(|r| r);
    let (version, rows) = match outcome {
        Ok(done) => done,
        Err(e) => {
            if !to_stdout {
                let _ = std::fs::remove_file(&partial);
            }
            return Err(e);
        }
    };
    let bytes = if to_stdout {
        0
    } else {
        std::fs::rename(&partial, out).map_err(|e| io(out, "move the finished export here", e))?;
        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0)
    };
    Ok(Summary {
        version,
        rows,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Refuses a destination that exists and is not a regular file: a
/// symlink, a directory, a device such as /dev/full or a pipe would be
/// replaced by the rename, not written to.
fn refuse_special(out: &Path) -> Result<()> {
    match std::fs::symlink_metadata(out) {
        Ok(meta) if !meta.file_type().is_file() => Err(Error::Io {
            path: out.to_path_buf(),
            context: "export here: it is not a regular file (a symlink, directory, device or \
                      pipe), which the finished export would replace; give the path of a \
                      new or plain file (jsonl to standard output: --out -)",
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        }),
        _ => Ok(()),
    }
}

/// Most names tried for the file written beside `out`.
const PARTIAL_TRIES: u32 = 100;

/// A new file beside `out`, `NAME.PID-K.partial`, created only if nothing
/// (not even a symlink) is at that name: another export to the same path
/// writes its own file, and a link planted at the name is never followed.
fn create_partial(out: &Path) -> Result<(PathBuf, File)> {
    let base = out.file_name().unwrap_or_default().to_os_string();
    let mut last = None;
    for k in 0..PARTIAL_TRIES {
        let mut name = base.clone();
        name.push(format!(".{}-{k}.partial", std::process::id()));
        let path = out.with_file_name(name);
        match File::options().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some((path, e)),
            Err(source) => {
                return Err(Error::Io {
                    path,
                    context: "create the export file",
                    source,
                });
            }
        }
    }
    let (path, source) = last.expect("at least one name was tried");
    Err(Error::Io {
        path,
        context: "create the export file (every name tried is taken)",
        source,
    })
}

/// What the scan needs to know before the first value.
struct Setup {
    store: PathBuf,
    version: u64,
    id_kind: Option<IdKind>,
    /// JSON string literals of model versions, by the version whose record
    /// names them (a value's `model_ref`).
    models: HashMap<u32, String>,
    default_model: String,
}

fn scan_setup(store: &Store, snap: &Snapshot<'_, '_>, version: Option<u64>) -> Result<Setup> {
    let version = match version {
        Some(v) => v,
        None => snap.live()?.ok_or_else(|| Error::NoLive {
            store: store.dir().to_path_buf(),
        })?,
    };
    let rec = snap.record(version)?;
    let mut default_model = Vec::new();
    json::write_str(&mut default_model, &rec.model_version);
    Ok(Setup {
        store: store.dir().to_path_buf(),
        version,
        id_kind: rec.id_kind,
        models: HashMap::new(),
        default_model: String::from_utf8(default_model).unwrap_or_default(),
    })
}

impl Setup {
    fn shape(&self, detail: String) -> Error {
        Error::Shape {
            store: self.store.clone(),
            version: self.version,
            detail,
        }
    }

    /// The id kind of this version: recorded, or (for versions written
    /// before it was recorded) guessed from the first key: 8 bytes holding a
    /// control byte are a big-endian integer, anything else text.
    fn id_kind(&mut self, first_key: &[u8]) -> IdKind {
        *self.id_kind.get_or_insert_with(|| {
            if first_key.len() == 8 && first_key.iter().any(|b| *b < 0x20) {
                IdKind::Int
            } else {
                IdKind::String
            }
        })
    }

    fn id<'k>(&mut self, key: &'k [u8]) -> Result<IdRef<'k>> {
        match self.id_kind(key) {
            IdKind::String => Ok(IdRef::Str(key)),
            IdKind::Int => match <[u8; 8]>::try_from(key) {
                Ok(b) => Ok(IdRef::Int(u64::from_be_bytes(b))),
                Err(_) => Err(self.shape(format!(
                    "an integer-id version holds a {}-byte key '{}'",
                    key.len(),
                    String::from_utf8_lossy(key)
                ))),
            },
        }
    }

    fn model_json(&mut self, snap: &Snapshot<'_, '_>, model_ref: u32) -> Result<&str> {
        if u64::from(model_ref) == self.version {
            return Ok(&self.default_model);
        }
        if !self.models.contains_key(&model_ref) {
            let text = match snap.find_record(u64::from(model_ref))? {
                Some(r) => {
                    let mut s = Vec::new();
                    json::write_str(&mut s, &r.model_version);
                    String::from_utf8(s).unwrap_or_default()
                }
                None => self.default_model.clone(),
            };
            self.models.insert(model_ref, text);
        }
        Ok(&self.models[&model_ref])
    }

    fn model_name(&mut self, snap: &Snapshot<'_, '_>, model_ref: u32) -> Result<String> {
        let text = self.model_json(snap, model_ref)?;
        Ok(serde_json::from_str(text).unwrap_or_default())
    }
}

fn write_jsonl<W: Write>(
    snap: &Snapshot<'_, '_>,
    mut setup: Setup,
    sink: W,
    path: &Path,
    now: u64,
) -> Result<u64> {
    let mut file = BufWriter::new(sink);
    let mut buf = Vec::with_capacity(JSONL_FLUSH_BYTES + 64 * 1024);
    let mut rows = 0u64;
    let mut failure: Option<Error> = None;
    let write_err = |e| Error::Io {
        path: path.to_path_buf(),
        context: "write the export",
        source: e,
    };
    snap.scan(setup.version, |key, value| {
        let step = (|| -> Result<()> {
            let id = setup.id(key)?;
            let version = setup.version;
            let model = setup.model_json(snap, value.model_ref())?;
            json::write_prediction(
                &mut buf,
                json::Fields {
                    id,
                    version,
                    model_version_json: model,
                    now,
                },
                value,
            );
            buf.push(b'\n');
            rows += 1;
            if buf.len() >= JSONL_FLUSH_BYTES {
                file.write_all(&buf).map_err(write_err)?;
                buf.clear();
            }
            Ok(())
        })();
        match step {
            Ok(()) => Ok(true),
            Err(e) => {
                failure = Some(e);
                Ok(false)
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    file.write_all(&buf).map_err(write_err)?;
    file.flush().map_err(write_err)?;
    Ok(rows)
}

/// One batch of entities in column form, built by the scan and turned into
/// Arrow arrays by the writer thread.
#[derive(Default)]
struct Columns {
    int_ids: Vec<u64>,
    str_ids: Vec<u8>,
    str_offsets: Vec<i32>,
    models: Vec<Arc<str>>,
    timestamps: Vec<u64>,
    ttls: Vec<u64>,
    offsets: Vec<i32>,
    items: Vec<u32>,
    scores: Vec<f32>,
}

impl Columns {
    fn len(&self) -> usize {
        self.timestamps.len()
    }
}

fn schema(id_kind: IdKind, kind: ValueKind) -> Arc<Schema> {
    let id = match id_kind {
        IdKind::Int => Field::new("id", DataType::UInt64, false),
        IdKind::String => Field::new("id", DataType::Utf8, false),
    };
    let value = match kind {
        ValueKind::TopK => Field::new(
            "top_k",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(pair_fields()),
                false,
            ))),
            false,
        ),
        ValueKind::Scores => Field::new(
            "scores",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
            false,
        ),
    };
    Arc::new(Schema::new(vec![
        id,
        Field::new("version", DataType::UInt64, false),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("timestamp", DataType::UInt64, false),
        Field::new("ttl", DataType::UInt64, false),
        value,
    ]))
}

fn pair_fields() -> Fields {
    Fields::from(vec![
        Field::new("item", DataType::UInt32, false),
        Field::new("score", DataType::Float32, false),
    ])
}

fn properties() -> WriterProperties {
    // Scores and items are high-cardinality numbers: dictionaries would cost
    // a hash per value and be abandoned; only the model version repeats.
    // Statistics are kept for the scalar columns, where readers prune on
    // them. Nearly all bytes are items and scores: scores are float
    // mantissas that snappy shrinks by 1% for most of the encoding time, so
    // they are stored plain; items are delta bit-packed (smaller than
    // snappy's output, for a third of its time). Measured on 1M top-100:
    // 627 MB in 4.1 CPU-s with snappy on both, 595 MB in 3.2 CPU-s so.
    let mut b = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from("model_version"), true)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for scalar in ["id", "version", "timestamp", "ttl"] {
        b = b.set_column_statistics_enabled(ColumnPath::from(scalar), EnabledStatistics::Chunk);
    }
    for score in [
        vec!["top_k", "list", "item", "score"],
        vec!["scores", "list", "item"],
    ] {
        let path = ColumnPath::new(score.into_iter().map(String::from).collect());
        b = b.set_column_compression(path, Compression::UNCOMPRESSED);
    }
    let items = ColumnPath::new(
        ["top_k", "list", "item", "item"]
            .into_iter()
            .map(String::from)
            .collect(),
    );
    b.set_column_encoding(items.clone(), Encoding::DELTA_BINARY_PACKED)
        .set_column_compression(items, Compression::UNCOMPRESSED)
        .build()
}

fn to_batch(
    schema: &Arc<Schema>,
    id_kind: IdKind,
    kind: ValueKind,
    version: u64,
    c: Columns,
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let n = c.len();
    let id: ArrayRef = match id_kind {
        IdKind::Int => Arc::new(UInt64Array::from(c.int_ids)),
        IdKind::String => Arc::new(StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(c.str_offsets)),
            c.str_ids.into(),
            None,
        )?),
    };
    let mut models = StringBuilder::with_capacity(n, n * c.models.first().map_or(0, |m| m.len()));
    for m in &c.models {
        models.append_value(m);
    }
    let offsets = OffsetBuffer::new(ScalarBuffer::from(c.offsets));
    let value: ArrayRef = match kind {
        ValueKind::TopK => {
            let pairs = StructArray::try_new(
                pair_fields(),
                vec![
                    Arc::new(UInt32Array::from(c.items)),
                    Arc::new(Float32Array::from(c.scores)),
                ],
                None,
            )?;
            let field = Arc::new(Field::new("item", DataType::Struct(pair_fields()), false));
            Arc::new(ListArray::try_new(field, offsets, Arc::new(pairs), None)?)
        }
        ValueKind::Scores => {
            let field = Arc::new(Field::new("item", DataType::Float32, false));
            Arc::new(ListArray::try_new(
                field,
                offsets,
                Arc::new(Float32Array::from(c.scores)),
                None,
            )?)
        }
    };
    RecordBatch::try_new(
        schema.clone(),
        vec![
            id,
            Arc::new(UInt64Array::from(vec![version; n])),
            Arc::new(models.finish()),
            Arc::new(UInt64Array::from(c.timestamps)),
            Arc::new(UInt64Array::from(c.ttls)),
            value,
        ],
    )
}

/// The first batch tells the writer the file's shape.
struct Start {
    id_kind: IdKind,
    kind: ValueKind,
}

fn write_parquet(
    snap: &Snapshot<'_, '_>,
    mut setup: Setup,
    file: File,
    path: &Path,
) -> Result<u64> {
    let (tx, rx) = sync_channel::<(Option<Start>, Columns)>(BATCHES_IN_FLIGHT);
    let version = setup.version;
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || parquet_writer(rx, file, path, version));
        let scanned = scan_columns(snap, &mut setup, tx);
        let written = writer.join().unwrap_or_else(|_| {
            Err(Error::Io {
                path: path.to_path_buf(),
                context: "the Parquet writer thread panicked",
                source: std::io::Error::other("panic"),
            })
        });
        // A scan error explains a writer that stopped early; report it first.
        let rows = scanned?;
        written?;
        Ok(rows)
    })
}

/// Scans the version into column batches and sends them to the writer.
/// Returns the rows sent.
fn scan_columns(
    snap: &Snapshot<'_, '_>,
    setup: &mut Setup,
    tx: SyncSender<(Option<Start>, Columns)>,
) -> Result<u64> {
    let mut cols = Columns::default();
    let mut start: Option<Start> = None;
    let mut kind: Option<ValueKind> = None;
    let mut model_names: HashMap<u32, Arc<str>> = HashMap::new();
    let mut rows = 0u64;
    let mut failure: Option<Error> = None;
    let mut first_sent = false;
    let send = |first_sent: &mut bool, start: &mut Option<Start>, cols: &mut Columns| -> bool {
        let batch = std::mem::take(cols);
        let header = if *first_sent { None } else { start.take() };
        *first_sent = true;
        tx.send((header, batch)).is_ok()
    };
    snap.scan(setup.version, |key, value: ValueRef<'_>| {
        let step = (|| -> Result<bool> {
            let id_kind = setup.id_kind(key);
            let vkind = value.kind();
            match kind {
                None => {
                    kind = Some(vkind);
                    start = Some(Start {
                        id_kind,
                        kind: vkind,
                    });
                    cols.offsets.push(0);
                    if id_kind == IdKind::String {
                        cols.str_offsets.push(0);
                    }
                }
                Some(k) if k != vkind => {
                    return Err(setup.shape(format!(
                        "entity '{}' holds {vkind:?} while earlier ones hold {k:?}",
                        String::from_utf8_lossy(key)
                    )));
                }
                Some(_) => {}
            }
            match setup.id(key)? {
                IdRef::Int(i) => cols.int_ids.push(i),
                IdRef::Str(s) => {
                    if std::str::from_utf8(s).is_err() {
                        return Err(setup.shape(format!(
                            "string id '{}' is not UTF-8",
                            String::from_utf8_lossy(s)
                        )));
                    }
                    cols.str_ids.extend_from_slice(s);
                    cols.str_offsets.push(cols.str_ids.len() as i32);
                }
            }
            let model_ref = value.model_ref();
            if let std::collections::hash_map::Entry::Vacant(e) = model_names.entry(model_ref) {
                e.insert(Arc::from(setup.model_name(snap, model_ref)?));
            }
            cols.models.push(model_names[&model_ref].clone());
            cols.timestamps.push(u64::from(value.timestamp()));
            cols.ttls.push(u64::from(value.ttl()));
            let payload = &value.as_bytes()[HEADER_LEN..];
            match vkind {
                // One pass per column over the (cached) payload: exact-size
                // iterators extend without a capacity check per element.
                ValueKind::TopK => {
                    let pairs = payload.chunks_exact(8);
                    cols.items.extend(
                        pairs
                            .clone()
                            .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]])),
                    );
                    cols.scores
                        .extend(pairs.map(|p| f32::from_le_bytes([p[4], p[5], p[6], p[7]])));
                }
                ValueKind::Scores => cols.scores.extend(
                    payload
                        .chunks_exact(4)
                        .map(|s| f32::from_le_bytes(s.try_into().unwrap_or_default())),
                ),
            }
            cols.offsets.push(cols.scores.len() as i32);
            rows += 1;
            if cols.len() >= BATCH_ROWS || cols.str_ids.len() >= i32::MAX as usize / 2 {
                let more = send(&mut first_sent, &mut start, &mut cols);
                cols.offsets.push(0);
                if id_kind == IdKind::String {
                    cols.str_offsets.push(0);
                }
                return Ok(more);
            }
            Ok(true)
        })();
        match step {
            Ok(more) => Ok(more),
            Err(e) => {
                failure = Some(e);
                Ok(false)
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if cols.len() > 0 || !first_sent {
        send(&mut first_sent, &mut start, &mut cols);
    }
    Ok(rows)
}

/// Encodes the batches into `file`: one thread per Parquet leaf column, so
/// the item and score columns (nearly all the bytes) encode side by side.
fn parquet_writer(
    rx: Receiver<(Option<Start>, Columns)>,
    file: File,
    path: &Path,
    version: u64,
) -> Result<()> {
    let pq = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let Ok((start, first)) = rx.recv() else {
        return Err(Error::Io {
            path: path.to_path_buf(),
            context: "the scan stopped before the first batch",
            source: std::io::Error::other("no data"),
        });
    };
    // An empty version still gets a valid file (integer ids, scores).
    let (id_kind, kind) = start.map_or((IdKind::Int, ValueKind::Scores), |s| (s.id_kind, s.kind));
    let schema = schema(id_kind, kind);
    let fd = writeback_handle(&file);
    let sink = BufWriter::with_capacity(1 << 20, file);
    let (mut writer, factory) = ArrowWriter::try_new(sink, schema.clone(), Some(properties()))
        .and_then(|w| w.into_serialized_writer())
        .map_err(pq)?;
    let mut pending = Some(first);
    let mut row_group = 0;
    loop {
        let columns = factory.create_column_writers(row_group).map_err(pq)?;
        let mut finished = false;
        let (chunks, rows) = std::thread::scope(|scope| -> Result<_> {
            let mut lanes = Vec::with_capacity(columns.len());
            for mut column in columns {
                let (tx, leaves) = sync_channel::<ArrowLeafColumn>(2);
                let encoder = scope.spawn(move || {
                    for leaf in leaves {
                        column.write(&leaf)?;
                    }
                    column.close()
                });
                lanes.push((tx, encoder));
            }
            let mut rows = 0usize;
            let mut sent = Ok(());
            while rows < ROW_GROUP_ROWS {
                let cols = match pending.take() {
                    Some(c) => c,
                    None => match rx.recv() {
                        Ok((_, c)) => c,
                        Err(_) => {
                            finished = true;
                            break;
                        }
                    },
                };
                if cols.len() == 0 {
                    continue;
                }
                rows += cols.len();
                let batch = to_batch(&schema, id_kind, kind, version, cols)
                    .map_err(|e| pq(parquet::errors::ParquetError::from(e)))?;
                let mut lane = lanes.iter();
                for (array, field) in batch.columns().iter().zip(schema.fields()) {
                    for leaf in compute_leaves(field, array).map_err(pq)? {
                        if let Some((tx, _)) = lane.next()
                            && tx.send(leaf).is_err()
                        {
                            // The encoder stopped; its error is reported below.
                            sent = Err(());
                        }
                    }
                }
                if sent.is_err() {
                    break;
                }
            }
            let mut chunks = Vec::with_capacity(lanes.len());
            for (tx, encoder) in lanes {
                drop(tx);
                let chunk = encoder
                    .join()
                    .map_err(|_| {
                        pq(parquet::errors::ParquetError::General(
                            "a column encoder panicked".into(),
                        ))
                    })?
                    .map_err(pq)?;
                chunks.push(chunk);
            }
            Ok((chunks, rows))
        })?;
        if rows > 0 {
            let mut group = writer.next_row_group().map_err(pq)?;
            for chunk in chunks {
                chunk.append_to_row_group(&mut group).map_err(pq)?;
            }
            group.close().map_err(pq)?;
            start_writeback(fd);
            row_group += 1;
        }
        if finished {
            break;
        }
    }
    let sink = writer.into_inner().map_err(pq)?;
    let file = sink.into_inner().map_err(|e| Error::Io {
        path: path.to_path_buf(),
        context: "write the export",
        source: e.into_error(),
    })?;
    file.sync_all().map_err(|e| Error::Io {
        path: path.to_path_buf(),
        context: "sync the export to disk",
        source: e,
    })
}

/// `herd store export` keeps the memory it frees for its next batches
/// ([`crate::memory::keep_freed_memory`]), its heap trimmed only above this.
/// Measured on the 1M-prediction export: system time 1.04-1.45 s ->
/// 0.51-0.63 s, peak memory +100 MB.
pub const KEEP_TRIM_BYTES: i32 = 1 << 30;

/// What [`start_writeback`] needs of the export's file.
#[cfg(target_os = "linux")]
fn writeback_handle(file: &File) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    file.as_raw_fd()
}

#[cfg(not(target_os = "linux"))]
fn writeback_handle(_: &File) {}

/// Starts writing to disk what the export wrote so far (Linux
/// `sync_file_range`, `SYNC_FILE_RANGE_WRITE`: it does not wait), so that
/// the disk works while the next row group is encoded and the final
/// `fsync` finds little left. Only a hint: the `fsync` still decides.
#[cfg(target_os = "linux")]
fn start_writeback(fd: std::os::fd::RawFd) {
    // SAFETY: `fd` is the export's open file, owned by the writer for the
    // whole export; the call reads no memory of ours.
    unsafe {
        libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: ()) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_planted_at_the_partial_names_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "victim data").unwrap();
        let out = dir.path().join("out.jsonl");
        for k in 0..2 {
            let name = format!("out.jsonl.{}-{k}.partial", std::process::id());
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        let (path, mut file) = create_partial(&out).unwrap();
        let want = format!("out.jsonl.{}-2.partial", std::process::id());
        assert_eq!(path, dir.path().join(want));
        file.write_all(b"export").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim data");
    }
}
