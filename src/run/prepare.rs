//! Everything a run needs before the first worker starts: the job and fleet
//! files, the input's index, the model (loaded here too, for the spot check
//! and to refuse a bad model before any host is touched) and per-row costs.
//! Every failure here is the user's input: exit code 2, naming the file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{self, Fleet, Job, OnInvalid};
use crate::data::{self, Dataset, Index, InvalidValue};
use crate::fleet::Companion;
use crate::model::Model;
use crate::plan::{CostIndex, LengthCosts};
use crate::worker::hex;

use super::Error;
use super::workers::LoadPlan;

pub struct Prepared {
    pub job: Job,
    pub fleet: Fleet,
    pub dataset: Arc<Dataset>,
    pub index: Index,
    /// Shared with the spot check's thread.
    pub model: Arc<Model>,
    pub weights_sha256: String,
    /// The files beside the model that loading it reads (an ONNX model's
    /// external data), each with its sha256: shipped with the model.
    pub companions: Vec<Companion>,
    /// Multiply-adds of every input row: block sums, each row's recomputed
    /// from its history length where needed.
    pub costs: CostIndex,
    /// Everything that changes a prediction, one hash per setting
    /// (`setting=hash;...`), for `--resume`: see [`fingerprint`].
    pub fingerprint: String,
    /// Rows with a null, NaN or infinite feature that `[input] on_invalid =
    /// "skip"` leaves out of the version: the first such value of each row,
    /// by row ascending.
    pub skipped: Vec<InvalidValue>,
    /// What preparing did that the user should hear of (generated data).
    pub notes: Vec<String>,
    /// Whether the input's ids strictly ascend in input order (found once,
    /// while checking that no id repeats).
    pub ids_ascend: bool,
    /// What each worker's `Load` carries but its host's settings.
    pub load: LoadPlan,
}

impl Prepared {
    /// Input rows in `rows` that `[input] on_invalid = "skip"` leaves out.
    pub fn skipped_in(&self, rows: &std::ops::Range<u64>) -> impl Iterator<Item = u64> + '_ {
        let (start, end) = (rows.start, rows.end);
        let from = self.skipped.partition_point(|v| v.row < start);
        self.skipped[from..]
            .iter()
            .map(|v| v.row)
            .take_while(move |&r| r < end)
    }

    /// Every input row that `[input] on_invalid = "skip"` leaves out,
    /// ascending.
    pub fn skipped_rows(&self) -> Vec<u64> {
        self.skipped.iter().map(|v| v.row).collect()
    }
}

/// Reads and checks a job file.
pub fn load_job(path: &Path) -> Result<Job, Error> {
    let text = read_config(path)?;
    config::parse_job(&text, path).map_err(|e| Error::Config(e.to_string()))
}

/// Reads and checks a fleet file.
pub fn load_fleet(path: &Path) -> Result<Fleet, Error> {
    let text = read_config(path)?;
    config::parse_fleet(&text, path).map_err(|e| Error::Config(e.to_string()))
}

fn read_config(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{}: cannot read: {e}", path.display())))
}

/// Loads the job, its fleet (or `hosts` instead), makes the demo data when the
/// job says how and it is missing, opens the input and the model.
pub fn prepare(job_path: &Path, hosts: Option<&Path>) -> Result<Prepared, Error> {
    let (job, fleet) = load_configs(job_path, hosts)?;
    prepare_loaded(job, fleet)
}

/// Reads and checks the job file and its fleet (or `hosts` instead).
pub fn load_configs(job_path: &Path, hosts: Option<&Path>) -> Result<(Job, Fleet), Error> {
    let job = load_job(job_path)?;
    let fleet_path: PathBuf = hosts
        .map(Path::to_path_buf)
        .unwrap_or_else(|| job.hosts.clone());
    let fleet = load_fleet(&fleet_path)?;
    Ok((job, fleet))
}

/// [`prepare`] of a job and fleet already read ([`load_configs`]).
pub fn prepare_loaded(job: Job, fleet: Fleet) -> Result<Prepared, Error> {
    prepare_loaded_then(job, fleet, |_| {})
}

/// [`prepare_loaded`], handing `loaded` what the workers' `Load` carries as
/// soon as the model is loaded and hashed, while the input's index is
/// still being read (not at all when the model fails to load).
pub fn prepare_loaded_then(
    mut job: Job,
    fleet: Fleet,
    loaded: impl FnOnce(LoadPlan),
) -> Result<Prepared, Error> {
    let notes: Vec<String> = generate_if_missing(&job)?.into_iter().collect();
    let job_file = job.file.display().to_string();
    if let Some(path) = job.input.path.local()
        && !path.starts_with("~")
        && !path.to_string_lossy().contains(['*', '?', '[', '{'])
        && !path.exists()
    {
        return Err(Error::Config(format!(
            "{job_file}: [input] path '{}' does not exist (generate it with `herd gen`, or fix the path; it is relative to the job file)",
            path.display()
        )));
    }
    if !job.model.weights.exists() {
        return Err(Error::Config(format!(
            "{job_file}: [model] weights '{}' does not exist (paths are relative to the job file)",
            job.model.weights.display()
        )));
    }
    let dataset = Dataset::open(&job.input, job.model.spec.reads_history())
        .map_err(|e| Error::Config(format!("{job_file}: [input] {e}")))?;
    // The model (read, hashed, loaded for the spot check's reference) and
    // the input's index (ids, history lengths) are independent: each on a
    // thread of its own, so a run waits for the longer of them only. A
    // model that fails to load stops the index at its next row group.
    let stop = AtomicBool::new(false);
    let (model, index) = std::thread::scope(|s| {
        let index = s.spawn(|| {
            let Some(index) = dataset
                .scan_index_unless(&stop)
                .map_err(|e| Error::Config(format!("{job_file}: [input] {e}")))?
            else {
                return Ok(None);
            };
            let ascend = check_unique_ids(&index, &job, &dataset)?;
            Ok::<_, Error>(Some((index, ascend)))
        });
        let model = load_model(&job, &job_file, dataset.num_features());
        match &model {
            Ok(m) => {
                let mut input = job.input.clone();
                input.on_invalid = on_invalid(&input, &m.model);
                let sha256 = &m.weights_sha256;
                loaded(LoadPlan::new(&job, input, sha256, dataset.num_features()));
            }
            Err(_) => stop.store(true, Ordering::Relaxed),
        }
        let index = index
            .join()
            .unwrap_or_else(|_| Err(Error::Failed("reading the input's index panicked".into())));
        (model, index)
    });
    let LoadedModel {
        model,
        weights_sha256,
        companions,
    } = model?;
    let (index, ids_ascend) = index?.expect("only a model that failed stops the index");
    // Whether an ONNX graph defines missing values is known once it is
    // loaded (see `on_invalid`).
    let mut dataset = dataset;
    let taken = on_invalid(&job.input, &model);
    if taken != job.input.on_invalid {
        job.input.on_invalid = taken;
        dataset.set_nulls_as_nan(false);
    }
    let mut model_identity = weights_sha256.clone();
    for c in &companions {
        model_identity.push_str(&format!(" {}:{}", c.name, c.sha256));
    }
    let skipped = invalid_features(&job, &dataset)?;
    let rows = index.ids.len() as u64;
    let lens = index.history_lens.clone();
    let costs = LengthCosts::new(rows, lens, |len| model.entity_cost(len));
    let costs = CostIndex::from_source(Arc::new(costs));
    let fingerprint = fingerprint(&job, &model_identity, &dataset)?;
    let load = LoadPlan::new(
        &job,
        job.input.clone(),
        &weights_sha256,
        dataset.num_features(),
    );
    Ok(Prepared {
        load,
        job,
        fleet,
        dataset: Arc::new(dataset),
        index,
        model: Arc::new(model),
        weights_sha256,
        companions,
        costs,
        fingerprint,
        skipped,
        ids_ascend,
        notes,
    })
}

/// How the input's invalid values are taken with `model`: `missing` (its
/// family's default) is `error` for a model that does not define missing
/// values (an ONNX network; a tree ensemble does).
fn on_invalid(input: &config::Input, model: &Model) -> OnInvalid {
    match input.on_invalid {
        OnInvalid::Missing if !model.defines_missing() => OnInvalid::Error,
        other => other,
    }
}

/// The job's model as the coordinator holds it.
struct LoadedModel {
    model: Model,
    weights_sha256: String,
    /// Files the model names beside it (ONNX external data), each hashed.
    companions: Vec<Companion>,
}

/// Reads the weights, hashes them and their companion files, and loads the
/// model (the spot check's reference scores with it).
fn load_model(job: &Job, job_file: &str, num_features: usize) -> Result<LoadedModel, Error> {
    let bytes = crate::memory::read_whole(&job.model.weights).map_err(|e| {
        Error::Config(format!(
            "{job_file}: [model] weights '{}': {e}",
            job.model.weights.display()
        ))
    })?;
    let model_error = |e: String| {
        Error::Config(format!(
            "{job_file}: [model] '{}': {e}",
            job.model.weights.display()
        ))
    };
    let (weights_sha256, loaded) = crate::worker::hashed_while(&bytes, || {
        crate::worker::read_companions(&job.model.spec, &bytes, &job.model.weights)
            .map_err(model_error)
            .and_then(|companions| {
                let model = Model::load(&job.model.spec, &bytes, &companions, num_features)
                    .map_err(|e| model_error(e.to_string()))?;
                Ok((model, companions))
            })
    });
    let (model, companions) = loaded?;
    // The fingerprint sees the companion files too (workers check the
    // model file's hash).
    let folder = job.model.weights.parent().unwrap_or(Path::new("."));
    let companions = companions
        .iter()
        .map(|(name, data)| Companion {
            name: name.clone(),
            path: folder.join(name),
            sha256: hex(&Sha256::digest(data)),
        })
        .collect();
    Ok(LoadedModel {
        model,
        weights_sha256,
        companions,
    })
}

/// Makes the job's data and model from its `[generate]` table when either is
/// missing; says what it made.
fn generate_if_missing(job: &Job) -> Result<Option<String>, Error> {
    let Some(g) = &job.generate else {
        return Ok(None);
    };
    let Some(input) = job.input.path.local() else {
        return Err(Error::Config(format!(
            "{}: [generate] writes a local file, but [input] path is the URL '{}'; \
             expected a local path (or no [generate])",
            job.file.display(),
            job.input.path
        )));
    };
    if input.exists() && job.model.weights.exists() {
        return Ok(None);
    }
    let kind = match g.kind {
        config::GenerateKind::TwoTower => data::r#gen::GenKind::TwoTower,
        config::GenerateKind::Mlp => data::r#gen::GenKind::Mlp,
        config::GenerateKind::Gbdt => data::r#gen::GenKind::Gbdt,
    };
    let mut opts = data::r#gen::GenOptions::defaults(kind);
    opts.users = g.users;
    opts.items = g.items;
    opts.dim = g.dim;
    opts.features = g.features;
    opts.seed = g.seed;
    (opts.trees, opts.depth) = (g.trees, g.depth);
    data::r#gen::generate(&opts, input, &job.model.weights)
        .map_err(|e| Error::Failed(format!("{}: [generate]: {e}", job.file.display())))?;
    Ok(Some(format!(
        "generated {} ({} rows) and {} from [generate] in {}",
        input.display(),
        g.users,
        job.model.weights.display(),
        job.file.display()
    )))
}

fn check_unique_ids(index: &Index, job: &Job, dataset: &Dataset) -> Result<bool, Error> {
    use crate::model::EntityIds;
    let dup = match &index.ids {
        EntityIds::Int(v) if ascend(v) => return Ok(true),
        EntityIds::Str(v) if ascend(v) => return Ok(true),
        EntityIds::Int(v) => first_duplicate(v),
        EntityIds::Str(v) => first_duplicate(v),
    };
    let Some((a, b)) = dup else {
        return Ok(false);
    };
    // Each row named in its part file (and the input's numbering, which the
    // report and the timeline use) when the input has many parts.
    let row = |r: usize| match dataset.num_parts() {
        1 => format!("row {r}"),
        _ => {
            let (path, own) = dataset.locate(r as u64);
            format!("row {r} ({} row {own})", path.display())
        }
    };
    Err(Error::Config(format!(
        "{}: [input] '{}': id '{}' appears at {} and {}; every entity needs exactly one row",
        job.file.display(),
        job.input.path,
        index.ids.key(a),
        row(a),
        row(b),
    )))
}

/// Whether `ids` strictly ascend, as written by most tools: then no id
/// repeats, found without sorting (a million integer ids: under a
/// millisecond against ~10 ms sorted, and no copy of them).
fn ascend<T: Ord>(ids: &[T]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

/// The first row whose id an earlier row has, and that earlier row: by
/// sorting (id, row) pairs, not hashing (a million ids sort in a fraction of
/// the time and memory a hash map of them takes).
fn first_duplicate<T: Ord>(ids: &[T]) -> Option<(usize, usize)> {
    let mut order: Vec<(&T, usize)> = ids.iter().zip(0..).collect();
    order.sort_unstable();
    order
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        // Rows ascend within an id: w[0] is the earlier row of the pair, and
        // the first pair of a group has the group's second row.
        .map(|w| (w[0].1, w[1].1))
        .min_by_key(|&(_, second)| second)
}

/// Null, NaN and infinite feature values: with `on_invalid = "skip"` every
/// affected row is returned (the first bad value of each), found before a
/// version is begun so that the chunks holding them are read by the
/// coordinator, which zeroes them; with `missing` they go to the model as
/// NaN. With `error` nothing is read here: whoever reads a chunk (a worker,
/// or the coordinator's read thread) checks its features as it decodes
/// them, and the first found stops the run (see
/// [`super::Coordinator::refuse_input`]), so the coordinator reads only the
/// input's index columns.
fn invalid_features(job: &Job, dataset: &Dataset) -> Result<Vec<InvalidValue>, Error> {
    if job.input.on_invalid != OnInvalid::Skip {
        return Ok(Vec::new());
    }
    let found = dataset
        .scan_invalid(false)
        .map_err(|e| Error::Config(format!("{}: [input] {e}", job.file.display())))?;
    let mut rows: Vec<InvalidValue> = Vec::with_capacity(found.len());
    for v in found {
        if rows.last().is_none_or(|last| last.row != v.row) {
            rows.push(v);
        }
    }
    Ok(rows)
}

/// The message that stops a run under `on_invalid = "error"`: row `row` of
/// the part file `path` has `what` (null, NaN, inf) in feature `column`.
pub(super) fn invalid_message(
    job: &Job,
    path: &Path,
    column: &str,
    row: u64,
    what: &str,
) -> String {
    format!(
        "{}: column '{column}', row {row}: the feature is {what}; fix the input, or set [input] \
         on_invalid = \"skip\" in {} to leave such entities out of the version",
        path.display(),
        job.file.display()
    )
}

/// Everything that changes a prediction, as `setting=hash` pairs joined by
/// `;` (so a refused `--resume` can name what changed): the job's
/// `model_version`, every resolved `[model]` setting, the weights' sha256,
/// the input's id, history and feature columns and `on_invalid`, and the
/// input's content identity: which part files it has (`input files`), and
/// each part's size, modification time and a hash of its Parquet footer (an
/// object's size, entity tag and modification time), as `input content`
/// and, for an input of at most [`NAMED_PARTS`] parts, one `input part N`
/// setting each, so that a refusal names the file. The modification time is
/// what a reader checks during a run too: a file rewritten with values
/// changed but size and footer kept (no statistics written) changes it.
pub fn fingerprint(job: &Job, weights_sha256: &str, dataset: &Dataset) -> Result<String, Error> {
    let mut parts: Vec<(String, String)> = vec![
        ("[job] model_version".into(), job.model_version.clone()),
        ("[model] kind".into(), job.model.spec.kind_name().into()),
        ("[model] weights (sha256)".into(), weights_sha256.into()),
    ];
    // Every resolved setting of the family, by name.
    if let Ok(serde_json::Value::Object(outer)) = serde_json::to_value(&job.model.spec) {
        for (_, settings) in outer {
            match settings {
                serde_json::Value::Object(fields) => {
                    for (k, v) in fields {
                        parts.push((format!("[model] {k}"), v.to_string()));
                    }
                }
                other => parts.push(("[model] settings".into(), other.to_string())),
            }
        }
    }
    let input = &job.input;
    parts.push(("[input] id_column".into(), input.id_column.clone()));
    parts.push((
        "[input] history_column".into(),
        format!(
            "{:?}",
            dataset.has_history().then_some(&input.history_column)
        ),
    ));
    parts.push((
        "[input] feature_columns".into(),
        format!("{:?}", dataset.feature_names()),
    ));
    parts.push((
        "[input] on_invalid".into(),
        format!("{:?}", input.on_invalid),
    ));
    // Every part's name and content identity: a local file's length,
    // modification time and footer hash, an object's size, entity tag and
    // modification time.
    let mut names = String::new();
    let mut content = String::new();
    let mut each = Vec::new();
    for (name, identity) in dataset.part_names().zip(dataset.identity().lines()) {
        // `identity` is "NAME SIZE MTIME" (or "NAME SIZE ETAG MTIME").
        let identity = identity
            .strip_prefix(&*name.to_string_lossy())
            .unwrap_or(identity)
            .trim_start();
        let id = match std::fs::metadata(name) {
            Ok(m) if m.is_file() => {
                let footer = parquet_identity(name).map_err(|e| {
                    Error::Config(format!(
                        "{}: [input] '{}': {e}",
                        job.file.display(),
                        name.display()
                    ))
                })?;
                format!("{footer} {identity}")
            }
            _ => identity.to_string(),
        };
        names.push_str(&format!("{}\n", name.display()));
        content.push_str(&format!("{} {id}\n", name.display()));
        each.push(id);
    }
    parts.push(("input files".into(), names));
    parts.push(("input content".into(), content));
    if each.len() <= NAMED_PARTS {
        for (i, id) in each.into_iter().enumerate() {
            parts.push((format!("{INPUT_PART} {i}"), id));
        }
    }
    Ok(parts
        .iter()
        .map(|(k, v)| format!("{k}={}", &hex(&Sha256::digest(v.as_bytes()))[..16]))
        .collect::<Vec<_>>()
        .join(";"))
}

/// The most part files whose identity the fingerprint keeps one by one (so
/// that a refused `--resume` names the file that changed); a larger input
/// keeps only the whole input's identity, and a refusal says its content
/// changed.
pub const NAMED_PARTS: usize = 1000;

/// The fingerprint setting of part N's identity: `input part N`.
const INPUT_PART: &str = "input part";

/// `changed` (settings whose hashes differ, from [`changed_settings`]) as a
/// refused `--resume` says them: a changed part named by its path in
/// `dataset` (when the input still has the same part files), the whole
/// input's content then left out as implied.
pub fn describe_changed(changed: &[String], dataset: &Dataset) -> String {
    let names: Vec<&Path> = dataset.part_names().collect();
    let same_files = !changed.iter().any(|k| k == "input files");
    let files: Vec<String> = changed
        .iter()
        .filter_map(|k| k.strip_prefix(INPUT_PART)?.trim().parse::<usize>().ok())
        .filter(|_| same_files)
        .filter_map(|i| names.get(i))
        .map(|name| format!("input file '{}'", name.display()))
        .collect();
    let mut out: Vec<String> = changed
        .iter()
        .filter(|k| !k.starts_with(INPUT_PART))
        .filter(|k| files.is_empty() || *k != "input content")
        .cloned()
        .collect();
    out.extend(files);
    let mut text = out.join(", ");
    if changed
        .iter()
        .any(|k| k == "input content" || k.starts_with(INPUT_PART))
    {
        text.push_str(
            " (an input file's size, modification time or Parquet footer; a file written \
             again, even with the same bytes, counts as changed)",
        );
    }
    text
}

/// A Parquet file's content identity: its length and the sha256 of its
/// footer (the metadata block at the end, which a change to any row group
/// changes).
fn parquet_identity(path: &Path) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    if len < 12 {
        return Err(bad("too short to be a Parquet file"));
    }
    let mut tail = [0u8; 8];
    f.seek(SeekFrom::End(-8))?;
    f.read_exact(&mut tail)?;
    if &tail[4..] != b"PAR1" {
        return Err(bad("no Parquet magic at the end"));
    }
    let footer = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    if footer + 8 > len {
        return Err(bad("the footer length runs past the start of the file"));
    }
    f.seek(SeekFrom::End(-8 - footer as i64))?;
    let mut h = Sha256::new();
    h.update(len.to_le_bytes());
    let mut bytes = Vec::with_capacity(footer as usize);
    f.take(footer).read_to_end(&mut bytes)?;
    h.update(&bytes);
    Ok(hex(&h.finalize()))
}

/// The settings whose hashes differ between two fingerprints.
pub fn changed_settings(was: &str, now: &str) -> Option<Vec<String>> {
    let parse = |f: &str| -> Option<std::collections::BTreeMap<String, String>> {
        f.split(';')
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    };
    let (was, now) = (parse(was)?, parse(now)?);
    let keys: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    Some(
        keys.into_iter()
            .filter(|k| was.get(*k) != now.get(*k))
            .cloned()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::{changed_settings, first_duplicate};

    #[test]
    fn changed_settings_names_every_setting_whose_hash_differs() {
        let was = "[model] top_k=aa;[input] feature_columns=bb;input content=cc";
        let now = "[model] top_k=aa;[input] feature_columns=bx;input content=cy";
        assert_eq!(
            changed_settings(was, now).unwrap(),
            vec!["[input] feature_columns", "input content"]
        );
        // A setting only one side has counts as changed.
        assert_eq!(
            changed_settings("a=1", "a=1;b=2").unwrap(),
            vec!["b".to_string()]
        );
        assert_eq!(changed_settings(was, was).unwrap(), Vec::<String>::new());
        // The old format (one bare hash) names nothing.
        assert_eq!(changed_settings("0123abcd", now), None);
    }

    #[test]
    fn the_first_duplicate_id_is_found_whatever_the_order() {
        assert_eq!(first_duplicate::<u64>(&[]), None);
        assert_eq!(first_duplicate(&[1u64, 2, 5, 9]), None);
        assert_eq!(first_duplicate(&[9u64, 2, 5, 1]), None);
        // Ascending but for one repeat: its two rows.
        assert_eq!(first_duplicate(&[1u64, 2, 2, 3]), Some((1, 2)));
        // The pair whose second row comes first, not the smallest id.
        assert_eq!(first_duplicate(&[7u64, 3, 9, 3, 7]), Some((1, 3)));
        assert_eq!(
            first_duplicate(&["b".to_string(), "a".into(), "b".into()]),
            Some((0, 2))
        );
    }
}
