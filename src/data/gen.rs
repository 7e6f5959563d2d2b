//! `herd gen`: a deterministic synthetic dataset and model for each reference
//! workload, so that every run, test and benchmark has the same real-shaped
//! data.
//!
//! Same options, same bytes: the values come from this module's own PRNG
//! (xoshiro256** seeded by splitmix64) and integer-only sampling, never from a
//! crate's RNG or the platform's `ln`/`exp`, and both files are written with
//! fixed settings. Files are written to a temporary name beside the target and
//! renamed into place, so a reader never sees half a file.
//!
//! The `two_tower` data has the skew that makes stragglers: most histories are
//! short, about 5% are hundreds to thousands of items long, about 1% are empty;
//! item popularity is Zipf-like, items repeat, and about 1% of history ids are
//! not in the catalogue (they must be skipped when pooling). Heavy users are
//! spread at random through the file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, UInt32Builder};
use arrow_array::{ArrayRef, Float32Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::{Error, Result};

/// Longest generated history.
pub const MAX_HISTORY_LEN: u64 = 4_000;
/// Short histories are this long at least (and at most `SHORT_HISTORY_MAX`).
const SHORT_HISTORY_MIN: u64 = 2;
const SHORT_HISTORY_MAX: u64 = 60;
/// Heavy histories are at least this long (and at most `MAX_HISTORY_LEN`).
const HEAVY_HISTORY_MIN: u64 = 300;
/// Per-mille of users with an empty history, with a heavy one, of history
/// entries that repeat an earlier entry, and of history ids outside the
/// catalogue.
const EMPTY_PER_MILLE: u64 = 10;
const HEAVY_PER_MILLE: u64 = 50;
const REPEAT_PER_MILLE: u64 = 100;
const MISSING_PER_MILLE: u64 = 10;
/// Most values in one weight tensor (4 GiB of f32).
pub const MAX_TENSOR_VALUES: u64 = 1 << 30;
/// Most catalogue items: item ids are `10 + 3 * row` and ids outside the
/// catalogue go up to `10 + 3 * items + 1`, all of which must fit in a u32.
pub const MAX_ITEMS: u32 = (u32::MAX - 12) / 3;

/// Most trees and deepest trees `herd gen gbdt` writes.
pub const MAX_GBDT_TREES: usize = 100_000;
pub const MAX_GBDT_DEPTH: usize = 16;
/// Per-mille of gbdt feature values that are missing (NaN).
const GBDT_NAN_PER_MILLE: u64 = 20;
/// Per-cent of nodes above the deepest level that split (one path per tree
/// always reaches the full depth).
const GBDT_SPLIT_PERCENT: u64 = 85;

/// The id of catalogue row `row`: not the row itself, so a backend that
/// confuses the two gets caught.
pub fn item_id(row: u32) -> u32 {
    10 + 3 * row
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenKind {
    TwoTower,
    Mlp,
    /// A gradient-boosted tree ensemble as ONNX (`gbdt.onnx`).
    Gbdt,
}

impl GenKind {
    pub fn name(self) -> &'static str {
        match self {
            GenKind::TwoTower => "two_tower",
            GenKind::Mlp => "mlp",
            GenKind::Gbdt => "gbdt",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GenOptions {
    pub kind: GenKind,
    /// Rows (users for two_tower, entities for mlp).
    pub users: u64,
    /// Catalogue size (two_tower only).
    pub items: u32,
    /// Embedding width (two_tower only).
    pub dim: usize,
    /// Dense feature columns `f0..`.
    pub features: usize,
    /// Width of the hidden layer(s).
    pub hidden: usize,
    /// Trees and their depth in branching levels (gbdt only).
    pub trees: usize,
    pub depth: usize,
    pub seed: u64,
    pub row_group_rows: usize,
}

impl GenOptions {
    /// two_tower: 20_000 users, 100_000 items, dim 64, 4 features, hidden 128;
    /// mlp: 100_000 rows, 64 features, hidden 256; gbdt: 100_000 rows, 100
    /// features, 500 trees of depth 8. Seed 42, row groups of 16_384 rows.
    pub fn defaults(kind: GenKind) -> GenOptions {
        match kind {
            GenKind::TwoTower => GenOptions {
                kind,
                users: 20_000,
                items: 100_000,
                dim: 64,
                features: 4,
                hidden: 128,
                trees: 0,
                depth: 0,
                seed: 42,
                row_group_rows: 16_384,
            },
            GenKind::Mlp => GenOptions {
                kind,
                users: 100_000,
                items: 0,
                dim: 0,
                features: 64,
                hidden: 256,
                trees: 0,
                depth: 0,
                seed: 42,
                row_group_rows: 16_384,
            },
            GenKind::Gbdt => GenOptions {
                kind,
                users: 100_000,
                items: 0,
                dim: 0,
                features: 100,
                hidden: 1,
                trees: 500,
                depth: 8,
                seed: 42,
                row_group_rows: 16_384,
            },
        }
    }

    fn check(&self) -> Result<()> {
        let bad = |option: &'static str, value: String, expected: &'static str| {
            Err(Error::GenOption {
                option,
                value,
                expected,
            })
        };
        if self.row_group_rows == 0 {
            return bad("row_group_rows", "0".into(), "must be at least 1");
        }
        if self.hidden == 0 {
            return bad("hidden", "0".into(), "must be at least 1");
        }
        match self.kind {
            GenKind::TwoTower => {
                if self.items == 0 || self.items > MAX_ITEMS {
                    return bad(
                        "items",
                        self.items.to_string(),
                        "must be in 1..=1431655761 (item ids 10 + 3 * row must fit in a u32)",
                    );
                }
                if self.dim == 0 {
                    return bad("dim", "0".into(), "must be at least 1");
                }
                let tensors = [
                    self.items as u64 * self.dim as u64,
                    self.hidden as u64 * (self.dim + self.features) as u64,
                ];
                if tensors.iter().any(|&n| n > MAX_TENSOR_VALUES) {
                    return bad(
                        "items x dim",
                        format!("{} x {}", self.items, self.dim),
                        "a weight tensor may hold at most 2^30 values",
                    );
                }
            }
            GenKind::Gbdt => {
                if self.features == 0 {
                    return bad(
                        "features",
                        "0".into(),
                        "a tree model needs at least 1 feature",
                    );
                }
                if self.trees == 0 || self.trees > MAX_GBDT_TREES {
                    return bad("trees", self.trees.to_string(), "must be in 1..=100000");
                }
                if self.depth == 0 || self.depth > MAX_GBDT_DEPTH {
                    return bad("depth", self.depth.to_string(), "must be in 1..=16");
                }
            }
            GenKind::Mlp => {
                if self.features == 0 {
                    return bad("features", "0".into(), "an mlp needs at least 1 feature");
                }
                let widest = self.hidden as u64 * self.hidden.max(self.features) as u64;
                if widest > MAX_TENSOR_VALUES {
                    return bad(
                        "hidden x features",
                        format!("{} x {}", self.hidden, self.features),
                        "a weight tensor may hold at most 2^30 values",
                    );
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GenSummary {
    pub rows: u64,
    pub data: PathBuf,
    pub weights: PathBuf,
    pub data_bytes: u64,
    pub weights_bytes: u64,
}

/// Writes the Parquet file to `data` and the safetensors model to `weights`
/// (creating parent dirs), writing to a temp name then renaming.
pub fn generate(opts: &GenOptions, data: &Path, weights: &Path) -> Result<GenSummary> {
    opts.check()?;
    // Independent streams, so the data does not change when the model's shape does.
    let mut data_rng = Rng::new(opts.seed ^ 0x6461_7461); // "data"
    let mut model_rng = Rng::new(opts.seed ^ 0x006d_6f64_656c); // "model"

    write_atomically(data, |tmp| write_data(opts, &mut data_rng, tmp))?;
    if opts.kind == GenKind::Gbdt {
        let bytes = gbdt_onnx(opts);
        write_atomically(weights, |tmp| {
            std::fs::write(tmp, &bytes).map_err(io_error(tmp))
        })?;
    } else {
        write_atomically(weights, |tmp| write_weights(opts, &mut model_rng, tmp))?;
    }

    let size = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })
    };
    Ok(GenSummary {
        rows: opts.users,
        data: data.to_path_buf(),
        weights: weights.to_path_buf(),
        data_bytes: size(data)?,
        weights_bytes: size(weights)?,
    })
}

/// A LightGBM-shaped binary classifier as ai.onnx.ml TreeEnsembleClassifier
/// attributes, as onnxmltools writes a LightGBM model: BRANCH_LEQ splits on
/// feature values in [-1, 1], a learned direction for missing values per
/// node, one weight per leaf on class 0, labels 0 and 1, LOGISTIC. Each
/// tree has `depth` branching levels on at least one path; other nodes
/// split with probability 85%. Pure: the same options give the same model.
pub fn gbdt_attrs(opts: &GenOptions) -> crate::model::trees::Attrs {
    use crate::model::trees::{Attr, Attrs};
    let mut rng = Rng::new(opts.seed ^ 0x006d_6f64_656c); // "model"
    #[derive(Default)]
    struct Out {
        treeids: Vec<i64>,
        nodeids: Vec<i64>,
        modes: Vec<String>,
        features: Vec<i64>,
        values: Vec<f32>,
        trues: Vec<i64>,
        falses: Vec<i64>,
        missing: Vec<i64>,
        w_trees: Vec<i64>,
        w_nodes: Vec<i64>,
        weights: Vec<f32>,
    }
    let mut o = Out::default();
    for t in 0..opts.trees as i64 {
        // Depth first: (parent slot to patch and whether this is its true
        // child, level, on the forced full-depth path).
        type Pending = (Option<(usize, bool)>, usize, bool);
        let mut next_id = 0i64;
        let mut todo: Vec<Pending> = vec![(None, 0, true)];
        while let Some((parent, level, forced)) = todo.pop() {
            let id = next_id;
            next_id += 1;
            let at = o.nodeids.len();
            if let Some((p, is_true)) = parent {
                if is_true {
                    o.trues[p] = id;
                } else {
                    o.falses[p] = id;
                }
            }
            o.treeids.push(t);
            o.nodeids.push(id);
            let split = level < opts.depth && (forced || rng.below(100) < GBDT_SPLIT_PERCENT);
            if split {
                o.modes.push("BRANCH_LEQ".into());
                o.features.push(rng.below(opts.features as u64) as i64);
                o.values.push(rng.symmetric(0.95));
                o.trues.push(0);
                o.falses.push(0);
                o.missing.push(rng.below(2) as i64);
                let forced_true = forced && rng.below(2) == 0;
                todo.push((Some((at, false)), level + 1, forced && !forced_true));
                todo.push((Some((at, true)), level + 1, forced_true));
            } else {
                o.modes.push("LEAF".into());
                o.features.push(0);
                o.values.push(0.0);
                o.trues.push(0);
                o.falses.push(0);
                o.missing.push(0);
                o.w_trees.push(t);
                o.w_nodes.push(id);
                o.weights.push(rng.symmetric(0.1));
            }
        }
    }
    let n_weights = o.weights.len();
    Attrs::new()
        .with("nodes_treeids", Attr::Ints(o.treeids))
        .with("nodes_nodeids", Attr::Ints(o.nodeids))
        .with("nodes_modes", Attr::Strs(o.modes))
        .with("nodes_featureids", Attr::Ints(o.features))
        .with("nodes_values", Attr::Floats(o.values))
        .with("nodes_truenodeids", Attr::Ints(o.trues))
        .with("nodes_falsenodeids", Attr::Ints(o.falses))
        .with("nodes_missing_value_tracks_true", Attr::Ints(o.missing))
        .with("class_treeids", Attr::Ints(o.w_trees))
        .with("class_nodeids", Attr::Ints(o.w_nodes))
        .with("class_ids", Attr::Ints(vec![0; n_weights]))
        .with("class_weights", Attr::Floats(o.weights))
        .with("classlabels_int64s", Attr::Ints(vec![0, 1]))
        .with("post_transform", Attr::Str("LOGISTIC".into()))
}

/// The ONNX file of a gbdt model: input `input` [N, features] float,
/// outputs `label` [N] int64 and `probabilities` [N, 2] float.
pub fn gbdt_onnx(opts: &GenOptions) -> Vec<u8> {
    use crate::model::onnx::proto::data_type;
    use crate::model::onnx::write::{GraphBuilder, batch_dims};
    let attrs = gbdt_attrs(opts);
    GraphBuilder::new(17)
        .opset(crate::model::onnx::op::ML_DOMAIN, 3)
        .input("input", data_type::FLOAT, &batch_dims(&[opts.features]))
        .output("label", data_type::INT64, &batch_dims(&[]))
        .output("probabilities", data_type::FLOAT, &batch_dims(&[2]))
        .node_in(
            crate::model::onnx::op::ML_DOMAIN,
            "TreeEnsembleClassifier",
            "gbdt",
            &["input"],
            &["label", "probabilities"],
            crate::model::onnx::ml::attr_protos(&attrs),
        )
        .finish()
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `write` on a temporary path beside `target`, then renames it over
/// `target`; the temporary file is removed when `write` fails.
fn write_atomically(target: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_error(&parent))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "gen".to_string());
    let tmp = parent.join(format!(".{name}.tmp"));
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, target).map_err(io_error(target))
}

fn write_data(opts: &GenOptions, rng: &mut Rng, path: &Path) -> Result<()> {
    let parquet_error = |source| Error::ParquetWrite {
        path: path.to_path_buf(),
        source,
    };
    let schema = data_schema(opts);
    // Ids and float features are (nearly) all distinct: written PLAIN, as
    // pyarrow and Spark end up writing such columns (they stop a column
    // chunk's dictionary at a 1 MiB page, 262,144 floats, well inside their
    // default row groups). A dictionary of them would be the values again
    // plus an index a value, 46% larger at 64 float features. Histories
    // (item ids from a catalogue, repeated) keep their dictionary.
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(opts.row_group_rows))
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(
            ColumnPath::from(vec!["history".into(), "list".into(), "item".into()]),
            true,
        )
        .build();
    let file = File::create(path).map_err(io_error(path))?;
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(parquet_error)?;
    let catalogue = Catalogue::new(opts.items, rng);
    let mut start = 0u64;
    while start < opts.users {
        let end = (start + opts.row_group_rows as u64).min(opts.users);
        let batch = match opts.kind {
            GenKind::TwoTower => two_tower_batch(opts, &schema, &catalogue, rng, start..end),
            GenKind::Mlp | GenKind::Gbdt => mlp_batch(opts, &schema, rng, start..end),
        }
        .map_err(|source| Error::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
        writer.write(&batch).map_err(parquet_error)?;
        writer.flush().map_err(parquet_error)?;
        start = end;
    }
    writer.close().map_err(parquet_error)?;
    Ok(())
}

fn data_schema(opts: &GenOptions) -> SchemaRef {
    let mut fields = Vec::new();
    match opts.kind {
        GenKind::TwoTower => {
            fields.push(Field::new("user_id", DataType::UInt64, false));
            fields.push(Field::new(
                "history",
                DataType::List(Arc::new(Field::new("item", DataType::UInt32, false))),
                false,
            ));
        }
        GenKind::Mlp | GenKind::Gbdt => {
            fields.push(Field::new("entity_id", DataType::UInt64, false))
        }
    }
    for j in 0..opts.features {
        fields.push(Field::new(format!("f{j}"), DataType::Float32, false));
    }
    Arc::new(Schema::new(fields))
}

/// Catalogue rows in popularity order: `by_rank[0]` is the most popular row.
/// Shuffled so that popularity does not follow the row number.
struct Catalogue {
    by_rank: Vec<u32>,
}

impl Catalogue {
    fn new(items: u32, rng: &mut Rng) -> Catalogue {
        let mut by_rank: Vec<u32> = (0..items).collect();
        for i in (1..by_rank.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            by_rank.swap(i, j);
        }
        Catalogue { by_rank }
    }

    /// A Zipf-like draw (probability of rank r about proportional to 1/r).
    fn popular_item(&self, rng: &mut Rng) -> u32 {
        let rank = log_uniform(rng, 1, self.by_rank.len() as u64) - 1;
        item_id(self.by_rank[rank as usize])
    }

    /// An id that no catalogue row has (`10 + 3 * row + 1`).
    fn missing_item(&self, rng: &mut Rng) -> u32 {
        item_id(rng.below(self.by_rank.len() as u64 + 1) as u32) + 1
    }
}

fn history_len(rng: &mut Rng) -> u64 {
    let class = rng.below(1000);
    if class < EMPTY_PER_MILLE {
        0
    } else if class < EMPTY_PER_MILLE + HEAVY_PER_MILLE {
        log_uniform(rng, HEAVY_HISTORY_MIN, MAX_HISTORY_LEN)
    } else {
        log_uniform(rng, SHORT_HISTORY_MIN, SHORT_HISTORY_MAX)
    }
}

fn two_tower_batch(
    opts: &GenOptions,
    schema: &SchemaRef,
    catalogue: &Catalogue,
    rng: &mut Rng,
    users: std::ops::Range<u64>,
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let n = (users.end - users.start) as usize;
    let item_field = Arc::new(Field::new("item", DataType::UInt32, false));
    let mut history = ListBuilder::new(UInt32Builder::new()).with_field(item_field);
    let mut features = vec![Vec::with_capacity(n); opts.features];
    let mut items = Vec::new();
    for _ in users.clone() {
        items.clear();
        for _ in 0..history_len(rng) {
            let roll = rng.below(1000);
            let item = if roll < MISSING_PER_MILLE {
                catalogue.missing_item(rng)
            } else if roll < MISSING_PER_MILLE + REPEAT_PER_MILLE && !items.is_empty() {
                items[rng.below(items.len() as u64) as usize]
            } else {
                catalogue.popular_item(rng)
            };
            items.push(item);
        }
        history.values().append_slice(&items);
        history.append(true);
        for column in &mut features {
            column.push(rng.symmetric(1.0));
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(users)),
        Arc::new(history.finish()),
    ];
    columns.extend(
        features
            .into_iter()
            .map(|c| Arc::new(Float32Array::from(c)) as ArrayRef),
    );
    RecordBatch::try_new(schema.clone(), columns)
}

fn mlp_batch(
    opts: &GenOptions,
    schema: &SchemaRef,
    rng: &mut Rng,
    rows: std::ops::Range<u64>,
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let n = (rows.end - rows.start) as usize;
    let mut features = vec![Vec::with_capacity(n); opts.features];
    let missing = opts.kind == GenKind::Gbdt;
    for _ in rows.clone() {
        for column in &mut features {
            // Tree data has missing values (NaN), which the model scores.
            let v = rng.symmetric(1.0);
            column.push(if missing && rng.below(1000) < GBDT_NAN_PER_MILLE {
                f32::NAN
            } else {
                v
            });
        }
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(rows))];
    columns.extend(
        features
            .into_iter()
            .map(|c| Arc::new(Float32Array::from(c)) as ArrayRef),
    );
    RecordBatch::try_new(schema.clone(), columns)
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
struct Tensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_tensor(name: &str, shape: Vec<usize>, values: impl IntoIterator<Item = f32>) -> Tensor {
    Tensor {
        name: name.to_string(),
        dtype: Dtype::F32,
        shape,
        bytes: values.into_iter().flat_map(f32::to_le_bytes).collect(),
    }
}

/// A `torch.nn.Linear`-shaped layer, values uniform in ±1/sqrt(fan_in).
fn dense(name: &str, in_dim: usize, out_dim: usize, rng: &mut Rng) -> [Tensor; 2] {
    let bound = 1.0 / (in_dim as f32).sqrt();
    let weight = (0..in_dim * out_dim)
        .map(|_| rng.symmetric(bound))
        .collect::<Vec<_>>();
    let bias = (0..out_dim)
        .map(|_| rng.symmetric(bound))
        .collect::<Vec<_>>();
    [
        f32_tensor(&format!("{name}.weight"), vec![out_dim, in_dim], weight),
        f32_tensor(&format!("{name}.bias"), vec![out_dim], bias),
    ]
}

fn write_weights(opts: &GenOptions, rng: &mut Rng, path: &Path) -> Result<()> {
    let mut tensors = Vec::new();
    match opts.kind {
        GenKind::TwoTower => {
            let (items, dim) = (opts.items as usize, opts.dim);
            let embeddings = (0..items * dim)
                .map(|_| rng.symmetric(1.0))
                .collect::<Vec<_>>();
            tensors.push(f32_tensor("item_embeddings", vec![items, dim], embeddings));
            tensors.push(Tensor {
                name: "item_ids".to_string(),
                dtype: Dtype::I64,
                shape: vec![items],
                bytes: (0..opts.items)
                    .flat_map(|row| (item_id(row) as i64).to_le_bytes())
                    .collect(),
            });
            tensors.extend(dense("user_tower.0", dim + opts.features, opts.hidden, rng));
            tensors.extend(dense("user_tower.2", opts.hidden, dim, rng));
        }
        GenKind::Mlp => {
            tensors.extend(dense("0", opts.features, opts.hidden, rng));
            tensors.extend(dense("2", opts.hidden, opts.hidden, rng));
            tensors.extend(dense("4", opts.hidden, 1, rng));
        }
        GenKind::Gbdt => unreachable!("a gbdt model is written as ONNX by gbdt_onnx"),
    }
    let safetensors_error = |source| Error::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    let views = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes).map(|view| (t.name.clone(), view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(safetensors_error)?;
    safetensors::serialize_to_file(views, None, path).map_err(safetensors_error)
}

/// A value in `lo..=hi` (`lo >= 1`) whose logarithm is roughly uniform: an
/// octave `2^k..2^(k+1)` is picked uniformly among those the range touches,
/// then a value uniformly within it. Integer-only, so the result never
/// depends on a platform's `ln`/`exp`.
fn log_uniform(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    debug_assert!(1 <= lo && lo <= hi);
    let (klo, khi) = (lo.ilog2(), hi.ilog2());
    let k = klo + rng.below(u64::from(khi - klo) + 1) as u32;
    let a = lo.max(1 << k);
    let b = hi.min((1u64 << k).saturating_mul(2) - 1);
    a + rng.below(b - a + 1)
}

/// xoshiro256** seeded by splitmix64: small, fast, and fixed here so that the
/// generated bytes never depend on another crate's version.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        let mut seeds = crate::splitmix::SplitMix64(seed);
        Rng {
            s: [
                seeds.next_u64(),
                seeds.next_u64(),
                seeds.next_u64(),
                seeds.next_u64(),
            ],
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`n >= 1`), by Lemire's multiply-shift with rejection.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n >= 1);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in `[-bound, bound)`.
    pub(crate) fn symmetric(&mut self, bound: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * unit - 1.0) * bound
    }
}
