//! The validation gate: checks a built version before it may go live.
//!
//! Every check reads one consistent snapshot of the store and reports what it
//! saw, with a few offending entities as examples. The gate decides nothing
//! about flipping and rescores nothing itself: the coordinator passes the
//! expected values of the sample rows (rescored on the CPU reference) and acts
//! on [`ValidationReport::passed`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;

use super::{Result, Snapshot, Store, Value, ValueKind, ValueRef};
use crate::config::Validate;
use crate::model::{EntityIds, EntityKey};
use crate::store::{Check, ValidationReport};

/// At most this many examples per check.
pub const MAX_EXAMPLES: usize = 5;
/// The drift check compares at most this many entities present in both versions.
pub const DRIFT_SAMPLE: usize = 10_000;

/// What the gate needs to know about the run.
#[derive(Clone, Debug)]
pub struct ValidationPlan<'a> {
    /// Every input entity, in input order (the run's own index when no row
    /// was left out: at 500M integer ids a copy is 4 GB).
    pub ids: Cow<'a, EntityIds>,
    /// K of a top-K model; `None` for a scoring model.
    pub top_k: Option<usize>,
    /// Spot check: rows rescored by the coordinator on the CPU reference.
    pub sample: Vec<SampleRow>,
    /// Allowed difference between a stored and an expected score: absolute up
    /// to magnitude 1, relative above.
    pub tolerance: f32,
    pub cfg: Validate,
    /// Input entities left out on purpose (`[input] on_invalid = "skip"`):
    /// not in `ids`, and counted as excluded, not missing.
    pub excluded: u64,
    /// Committed chunks' key ranges already read by the pass, each right
    /// after its commit ([`scan_chunk`]); the gate reads only the keys
    /// outside them, when `ids` strictly ascend.
    pub scanned: Vec<ChunkScan>,
}

/// What the gate's pass found among the entries of one committed chunk's
/// key range, read right after the chunk's commit ([`scan_chunk`]).
#[derive(Clone, Debug)]
pub struct ChunkScan {
    /// The range's first key, and the key just past its last one.
    start: Vec<u8>,
    end: Vec<u8>,
    seen: Seen,
}

/// The gate's pass over `version`'s entries with keys from the first to
/// the last of `ids`, the entities of a chunk just committed; `None` when
/// they do not strictly ascend. The gate takes it in place of reading that
/// range again only where every input entity's id strictly ascends in
/// input order: then the range holds no other input entity's key, and no
/// later commit of the run writes in it.
pub fn scan_chunk(
    store: &Store,
    version: u64,
    ids: &EntityIds,
    top_k: Option<usize>,
) -> Result<Option<ChunkScan>> {
    let input = InputKeys::of(ids);
    if ids.is_empty() || !input.in_input_order() {
        return Ok(None);
    }
    let start = input.key_bytes(0);
    let mut end = input.key_bytes(input.len() - 1);
    end.push(0); // the smallest key after the last one
    let seen = store.snapshot(|snap| {
        let mut state = (Seen::default(), 0);
        snap.scan_between(version, (&start, Some(&end)), |entity, value| {
            check_entry(&mut state, ids, top_k, &input, entity, value)
        })?;
        Ok(state.0)
    })?;
    Ok(Some(ChunkScan { start, end, seen }))
}

/// A key range the pass must still read (its first key, and the key past
/// its last or `None`), then the chunk read already that follows it.
type Gap<'p> = (Vec<u8>, Option<Vec<u8>>, Option<&'p Seen>);

/// The key ranges the pass must still read, in key order, each with the
/// chunk read already after it, when `plan.scanned` may stand for the
/// rest: the input's ids strictly ascend and the scanned ranges do not
/// overlap. `None` when the whole version must be read.
fn unscanned<'p>(plan: &'p ValidationPlan<'_>, input: &InputKeys<'_>) -> Option<Vec<Gap<'p>>> {
    if plan.scanned.is_empty() || !input.in_input_order() {
        return None;
    }
    let mut scanned: Vec<&ChunkScan> = plan.scanned.iter().collect();
    scanned.sort_unstable_by(|a, b| a.start.cmp(&b.start));
    let mut gaps = Vec::with_capacity(scanned.len() + 1);
    let mut from = Vec::new();
    for c in scanned {
        if c.start < from {
            return None;
        }
        let start = std::mem::replace(&mut from, c.end.clone());
        gaps.push((start, Some(c.start.clone()), Some(&c.seen)));
    }
    gaps.push((from, None, None));
    Some(gaps)
}

/// One rescored entity.
#[derive(Clone, Debug)]
pub struct SampleRow {
    pub key: EntityKey,
    /// Items that must not appear in its top-K: its whole history when the
    /// model excludes seen items, else empty.
    pub history: Vec<u32>,
    pub expected: Value,
}

/// Runs every check of the gate on `version`; `live` is the version readers
/// see now (for the drift check). `passed` is true when every check passed.
pub fn validate(
    store: &Store,
    version: u64,
    live: Option<u64>,
    plan: &ValidationPlan<'_>,
) -> Result<ValidationReport> {
    // The live version's row count (LMDB keeps it): it does not change
    // while this one is checked.
    let live_rows = match live.filter(|&l| l != version) {
        Some(l) => Some((l, store.len(l)?)),
        None => None,
    };
    store.snapshot(|snap| {
        snap.record(version)?;
        let input = InputKeys::of(&plan.ids);
        let mut seen = scan(snap, version, plan, &input)?;
        let mut checks = vec![
            coverage(snap, version, plan, &input, &mut seen)?,
            Check {
                name: "finite".into(),
                passed: seen.non_finite <= plan.cfg.max_non_finite,
                detail: format!(
                    "{} non-finite scores (max_non_finite {})",
                    seen.non_finite, plan.cfg.max_non_finite
                ),
                examples: seen.finite_examples.clone(),
            },
        ];
        checks.push(rows(seen.stored, live_rows, plan));
        let spot = spot_check(snap, version, plan, &mut seen)?;
        checks.push(Check {
            name: "topk_well_formed".into(),
            passed: seen.malformed == 0,
            detail: match plan.top_k {
                Some(k) => format!(
                    "{} malformed top-K values (want sorted by score descending, unique items, at most {k}; \
                     sample rows: no item from the history, the expected length)",
                    seen.malformed
                ),
                None => format!(
                    "{} values are top-K lists where scores were expected",
                    seen.malformed
                ),
            },
            examples: seen.malformed_examples,
        });
        checks.push(spot);
        if let Some(live) = live.filter(|&l| l != version)
            && (plan.cfg.max_topk_churn.is_some() || plan.cfg.max_mean_shift.is_some())
        {
            checks.push(drift(snap, version, live, plan)?);
        }
        Ok(ValidationReport {
            passed: checks.iter().all(|c| c.passed),
            checks,
        })
    })
}

/// The version's row count: at least `min_rows`, and within
/// `max_row_change` (a fraction of the live count) of the live version's.
fn rows(stored: u64, live: Option<(u64, u64)>, plan: &ValidationPlan<'_>) -> Check {
    let cfg = &plan.cfg;
    let mut passed = stored >= cfg.min_rows;
    let mut detail = format!("{stored} rows (min_rows {})", cfg.min_rows);
    if let Some((live, live_rows)) = live {
        let change = if live_rows == 0 {
            if stored == 0 { 0.0 } else { f64::INFINITY }
        } else {
            (stored as f64 - live_rows as f64).abs() / live_rows as f64
        };
        passed &= change <= cfg.max_row_change;
        detail.push_str(&format!(
            "; live v{live} has {live_rows} rows: a change of {change:.4} of them \
             (max_row_change {})",
            cfg.max_row_change
        ));
    }
    Check {
        name: "rows".into(),
        passed,
        detail,
        examples: Vec::new(),
    }
}

/// The input's distinct entity keys, sorted: a key is looked up by binary
/// search. The input's own ids when they already ascend (no copy: at 500M
/// integer ids a copy is 4 GB more at the gate), else a sorted copy of
/// them (8 bytes an integer id, a reference a string id) instead of a set
/// of owned keys (an allocation each).
enum InputKeys<'a> {
    /// Integer ids; their keys are 8 bytes big-endian, which sort as the
    /// numbers do.
    Int(Cow<'a, [u64]>),
    /// String ids, sorted and distinct, as their bytes.
    Str(Vec<&'a [u8]>),
    /// String ids that already ascend (as bytes, as the keys sort).
    StrAscending(&'a [String]),
}

impl<'a> InputKeys<'a> {
    fn of(ids: &'a EntityIds) -> InputKeys<'a> {
        match ids {
            EntityIds::Int(v) if ascending(v) => InputKeys::Int(Cow::Borrowed(v)),
            EntityIds::Int(v) => {
                let mut keys = v.clone();
                keys.sort_unstable();
                keys.dedup();
                InputKeys::Int(Cow::Owned(keys))
            }
            // Strings order as their bytes do, as the keys sort.
            EntityIds::Str(v) if ascending(v) => InputKeys::StrAscending(v),
            EntityIds::Str(v) => {
                let mut keys: Vec<&[u8]> = v.iter().map(|s| s.as_bytes()).collect();
                keys.sort_unstable();
                keys.dedup();
                InputKeys::Str(keys)
            }
        }
    }

    /// Whether `key` is an input key. `walk` is where the previous call
    /// left off: a scan asks for its keys in ascending order, so the next
    /// key is most often the very next input key (a comparison, not a
    /// search); a key below `walk` is searched for among those before it.
    fn contains(&self, key: &[u8], walk: &mut usize) -> bool {
        match self {
            InputKeys::Int(keys) => <[u8; 8]>::try_from(key).is_ok_and(|b| {
                let id = u64::from_be_bytes(b);
                find_from(keys, |k| k.cmp(&id), walk)
            }),
            InputKeys::Str(keys) => find_from(keys, |k| (*k).cmp(key), walk),
            InputKeys::StrAscending(keys) => find_from(keys, |k| k.as_bytes().cmp(key), walk),
        }
    }

    /// The bytes of the `i`th key, as the store's keys are.
    fn key_bytes(&self, i: usize) -> Vec<u8> {
        match self {
            InputKeys::Int(keys) => keys[i].to_be_bytes().to_vec(),
            InputKeys::Str(keys) => keys[i].to_vec(),
            InputKeys::StrAscending(keys) => keys[i].as_bytes().to_vec(),
        }
    }

    /// Whether these are the input's ids themselves, which then strictly
    /// ascend in input order.
    fn in_input_order(&self) -> bool {
        matches!(
            self,
            InputKeys::Int(Cow::Borrowed(_)) | InputKeys::StrAscending(_)
        )
    }

    /// The position of the first key at or after `key`.
    fn position(&self, key: &[u8]) -> usize {
        match self {
            InputKeys::Int(keys) => keys.partition_point(|k| k.to_be_bytes().as_slice() < key),
            InputKeys::Str(keys) => keys.partition_point(|k| *k < key),
            InputKeys::StrAscending(keys) => keys.partition_point(|k| k.as_bytes() < key),
        }
    }

    fn len(&self) -> usize {
        match self {
            InputKeys::Int(keys) => keys.len(),
            InputKeys::Str(keys) => keys.len(),
            InputKeys::StrAscending(keys) => keys.len(),
        }
    }
}

/// Whether `v` strictly ascends (sorted, no repeats).
fn ascending<T: Ord>(v: &[T]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

/// Whether the key that `cmp` compares each of `keys` (sorted, distinct)
/// with is among them, looking first at `keys[*walk..]` and leaving `walk`
/// after it when it is there.
fn find_from<T>(keys: &[T], cmp: impl Fn(&T) -> Ordering, walk: &mut usize) -> bool {
    let rest = &keys[*walk..];
    match rest.first().map(&cmp) {
        Some(Ordering::Equal) => {
            *walk += 1;
            true
        }
        Some(Ordering::Less) => match rest.binary_search_by(&cmp) {
            Ok(i) => {
                *walk += i + 1;
                true
            }
            Err(i) => {
                *walk += i;
                false
            }
        },
        // Below every key not yet walked past: not an input key, unless
        // the scan went back (it does not), when one is found below.
        _ => keys[..*walk].binary_search_by(&cmp).is_ok(),
    }
}

/// What one pass over the stored values found.
#[derive(Clone, Debug, Default)]
struct Seen {
    stored: u64,
    /// Stored entries that are not input entities.
    extra: u64,
    coverage_examples: Vec<String>,
    non_finite: u64,
    finite_examples: Vec<String>,
    malformed: u64,
    malformed_examples: Vec<String>,
}

impl Seen {
    /// What `next`, the pass over the keys after this one's, found too.
    fn then(mut self, next: Seen) -> Seen {
        self.stored += next.stored;
        self.extra += next.extra;
        self.non_finite += next.non_finite;
        self.malformed += next.malformed;
        for (to, from) in [
            (&mut self.coverage_examples, next.coverage_examples),
            (&mut self.finite_examples, next.finite_examples),
            (&mut self.malformed_examples, next.malformed_examples),
        ] {
            for example in from {
                push_example(to, example);
            }
        }
        self
    }
}

/// A version with at least this many entries is scanned on several
/// threads (on a 2-core machine a million entries took ~40 ms on one; the
/// gate runs after the workers have stopped, with the cores idle).
const SPLIT_SCAN_ENTRIES: u64 = 1 << 17;
/// At most this many threads scan one version.
const SCAN_THREADS: usize = 4;

/// One pass over the stored values: coverage, finiteness, top-K shape. A
/// large version is read in key ranges split at the input keys' quantiles,
/// each on a thread of its own, with the same result as one pass.
fn scan(
    snap: &Snapshot<'_, '_>,
    version: u64,
    plan: &ValidationPlan<'_>,
    input: &InputKeys<'_>,
) -> Result<Seen> {
    if let Some(gaps) = unscanned(plan, input) {
        // In key order, as one pass would find them (the examples too).
        let mut seen = Seen::default();
        for (start, end, chunk) in gaps {
            let mut state = (Seen::default(), input.position(&start));
            snap.scan_between(version, (&start, end.as_deref()), |entity, value| {
                check_entry(&mut state, &plan.ids, plan.top_k, input, entity, value)
            })?;
            seen = seen.then(state.0);
            if let Some(chunk) = chunk {
                seen = seen.then(chunk.clone());
            }
        }
        return Ok(seen);
    }
    let threads = if snap.entries(version)? < SPLIT_SCAN_ENTRIES {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, SCAN_THREADS)
            .min(input.len().max(1))
    };
    // Range i starts at input key `walks[i]`: its walk through the input
    // keys starts there.
    let walks: Vec<usize> = (0..threads).map(|i| input.len() * i / threads).collect();
    let bounds: Vec<Vec<u8>> = walks[1..].iter().map(|&i| input.key_bytes(i)).collect();
    let mut states: Vec<(Seen, usize)> = walks.iter().map(|&w| (Seen::default(), w)).collect();
    snap.scan_ranges(version, &bounds, &mut states, |state, entity, value| {
        check_entry(state, &plan.ids, plan.top_k, input, entity, value);
        Ok(())
    })?;
    Ok(states
        .into_iter()
        .map(|(seen, _)| seen)
        .reduce(Seen::then)
        .unwrap_or_default())
}

/// The pass's checks of one stored entry: an input entity (looked for from
/// `walk` on), finite scores, a well-formed value.
fn check_entry(
    (seen, walk): &mut (Seen, usize),
    ids: &EntityIds,
    top_k: Option<usize>,
    input: &InputKeys<'_>,
    entity: &[u8],
    value: ValueRef<'_>,
) {
    seen.stored += 1;
    if !input.contains(entity, walk) {
        seen.extra += 1;
        push_example(
            &mut seen.coverage_examples,
            format!("not in the input: {}", show(ids, entity)),
        );
    }
    for (j, s) in value.scores().enumerate() {
        if !s.is_finite() {
            seen.non_finite += 1;
            push_example(
                &mut seen.finite_examples,
                format!("{}: score[{j}] = {s}", show(ids, entity)),
            );
        }
    }
    if let Some(problem) = topk_problem(value, top_k) {
        seen.malformed += 1;
        push_example(
            &mut seen.malformed_examples,
            format!("{}: {problem}", show(ids, entity)),
        );
    }
}

/// Every input entity exactly once: stored keys are unique, so the stored
/// entries that are not extra are input entities.
fn coverage(
    snap: &Snapshot<'_, '_>,
    version: u64,
    plan: &ValidationPlan<'_>,
    input: &InputKeys<'_>,
    seen: &mut Seen,
) -> Result<Check> {
    let present = seen.stored - seen.extra;
    let distinct = input.len() as u64;
    if present < distinct {
        let mut reported = HashSet::new();
        for i in 0..plan.ids.len() {
            if seen.coverage_examples.len() >= MAX_EXAMPLES {
                break;
            }
            let key = plan.ids.key(i);
            if snap.value(version, &key)?.is_none() && reported.insert(key.to_bytes()) {
                seen.coverage_examples.push(format!("missing: {key}"));
            }
        }
    }
    let fraction = if distinct == 0 {
        1.0
    } else {
        present as f64 / distinct as f64
    };
    Ok(Check {
        name: "coverage".into(),
        passed: fraction >= plan.cfg.min_coverage && seen.extra == 0,
        detail: format!(
            "{present} of {distinct} distinct input entities have a prediction \
             (fraction {fraction:.6}, min_coverage {}); {} stored entries are not input entities; \
             {} entities excluded by [input] on_invalid = \"skip\"",
            plan.cfg.min_coverage, seen.extra, plan.excluded
        ),
        examples: std::mem::take(&mut seen.coverage_examples),
    })
}

/// The sample rows against their reference values; a sample row of the
/// wrong shape also counts as malformed.
fn spot_check(
    snap: &Snapshot<'_, '_>,
    version: u64,
    plan: &ValidationPlan<'_>,
    seen: &mut Seen,
) -> Result<Check> {
    let mut matched = 0usize;
    let mut examples = Vec::new();
    for row in &plan.sample {
        let Some(value) = snap.value(version, &row.key)? else {
            push_example(&mut examples, format!("{}: no stored prediction", row.key));
            continue;
        };
        if let Some(problem) = sample_shape_problem(value, row) {
            seen.malformed += 1;
            push_example(
                &mut seen.malformed_examples,
                format!("{}: {problem}", row.key),
            );
        }
        match compare(&value.to_value(), &row.expected, plan.tolerance) {
            Ok(()) => matched += 1,
            Err(why) => push_example(&mut examples, format!("{}: {why}", row.key)),
        }
    }
    Ok(Check {
        name: "spot_check".into(),
        passed: matched == plan.sample.len(),
        detail: format!(
            "{matched} of {} rescored entities match within tolerance {} \
             (a sample of {} drawn uniformly from {} entities)",
            plan.sample.len(),
            plan.tolerance,
            plan.sample.len(),
            plan.ids.len()
        ),
        examples,
    })
}

fn push_example(examples: &mut Vec<String>, example: String) {
    if examples.len() < MAX_EXAMPLES {
        examples.push(example);
    }
}

/// An entity key's bytes as the user wrote the id.
fn show(ids: &EntityIds, entity: &[u8]) -> String {
    match (ids, <[u8; 8]>::try_from(entity)) {
        (EntityIds::Int(_), Ok(b)) => u64::from_be_bytes(b).to_string(),
        _ => String::from_utf8_lossy(entity).into_owned(),
    }
}

fn topk_problem(value: ValueRef<'_>, top_k: Option<usize>) -> Option<String> {
    let Some(k) = top_k else {
        return (value.kind() == ValueKind::TopK)
            .then(|| "a top-K list from a scoring model".into());
    };
    if value.kind() != ValueKind::TopK {
        return Some("scores where a top-K list was expected".into());
    }
    let n = value.count();
    if n > k {
        return Some(format!("{n} pairs, more than K = {k}"));
    }
    for i in 1..n {
        let (a, b) = (value.score(i - 1), value.score(i));
        if a < b {
            return Some(format!(
                "not sorted: score[{}] = {a} < score[{i}] = {b}",
                i - 1
            ));
        }
    }
    let mut items: Vec<u32> = value.pairs().map(|(item, _)| item).collect();
    items.sort_unstable();
    if let Some(w) = items.windows(2).find(|w| w[0] == w[1]) {
        return Some(format!("item {} appears twice", w[0]));
    }
    None
}

fn sample_shape_problem(value: ValueRef<'_>, row: &SampleRow) -> Option<String> {
    if value.count() != row.expected.len() {
        return Some(format!(
            "{} entries, the reference gives {}",
            value.count(),
            row.expected.len()
        ));
    }
    if row.history.is_empty() {
        return None;
    }
    let history: HashSet<u32> = row.history.iter().copied().collect();
    value
        .pairs()
        .find(|(item, _)| history.contains(item))
        .map(|(item, _)| format!("item {item} is in the entity's history"))
}

/// Scores agree within `tol`: absolute up to magnitude 1, relative above;
/// the same infinity, or NaN on both sides, agrees (the `finite` check
/// judges those, not the spot check).
fn close(a: f32, b: f32, tol: f32) -> bool {
    if !a.is_finite() || !b.is_finite() {
        return a == b || (a.is_nan() && b.is_nan());
    }
    (a - b).abs() <= tol * b.abs().max(1.0)
}

/// Compares a stored value with the reference. Top-K lists must agree score by
/// score; an item may differ from the reference at a position only where the
/// scores tie within `tol` (two tied items swapped, or a tie at the cut).
pub fn compare(stored: &Value, expected: &Value, tol: f32) -> std::result::Result<(), String> {
    match (stored, expected) {
        (Value::Scores(s), Value::Scores(e)) => {
            if s.len() != e.len() {
                return Err(format!(
                    "{} scores, the reference gives {}",
                    s.len(),
                    e.len()
                ));
            }
            match (0..s.len()).find(|&i| !close(s[i], e[i], tol)) {
                Some(i) => Err(format!(
                    "score[{i}] = {}, the reference gives {}",
                    s[i], e[i]
                )),
                None => Ok(()),
            }
        }
        (Value::TopK(s), Value::TopK(e)) => {
            if s.len() != e.len() {
                return Err(format!(
                    "{} pairs, the reference gives {}",
                    s.len(),
                    e.len()
                ));
            }
            for (i, (&(si, ss), &(ei, es))) in s.iter().zip(e).enumerate() {
                if !close(ss, es, tol) {
                    return Err(format!(
                        "position {i}: score {ss} (item {si}), the reference gives {es} (item {ei})"
                    ));
                }
                if si == ei {
                    continue;
                }
                let tied_inside = e
                    .iter()
                    .any(|&(item, score)| item == si && close(score, ss, tol));
                let tied_at_cut = !e.iter().any(|&(item, _)| item == si)
                    && e.last().is_some_and(|&(_, last)| close(ss, last, tol));
                if !(tied_inside || tied_at_cut) {
                    return Err(format!(
                        "position {i}: item {si} (score {ss}), the reference gives item {ei} (score {es}) and the scores do not tie"
                    ));
                }
            }
            Ok(())
        }
        (Value::Scores(_), Value::TopK(_)) => {
            Err("stored scores, the reference gives a top-K list".into())
        }
        (Value::TopK(_), Value::Scores(_)) => {
            Err("stored a top-K list, the reference gives scores".into())
        }
    }
}

fn drift(
    snap: &Snapshot<'_, '_>,
    version: u64,
    live: u64,
    plan: &ValidationPlan<'_>,
) -> Result<Check> {
    snap.record(live)?;
    let mut common = 0usize;
    let mut churn_sum = 0.0f64;
    let mut churn_n = 0usize;
    let mut shift_sum = 0.0f64;
    let mut shift_n = 0usize;
    snap.scan(version, |entity, new| {
        let Some(old) = snap.value_by_bytes(live, entity)? else {
            return Ok(true);
        };
        common += 1;
        match (new.kind(), old.kind()) {
            (ValueKind::TopK, ValueKind::TopK) => {
                let k = plan.top_k.unwrap_or(new.count().max(old.count()));
                if k > 0 {
                    let old_items: HashSet<u32> = old.pairs().map(|(i, _)| i).collect();
                    let overlap = new.pairs().filter(|(i, _)| old_items.contains(i)).count();
                    churn_sum += 1.0 - overlap as f64 / k as f64;
                    churn_n += 1;
                }
            }
            (ValueKind::Scores, ValueKind::Scores) => {
                let n = new.count().min(old.count());
                let diffs: Vec<f64> = (0..n)
                    .map(|i| f64::from(new.score(i) - old.score(i)).abs())
                    .filter(|d| d.is_finite())
                    .collect();
                if !diffs.is_empty() {
                    shift_sum += diffs.iter().sum::<f64>() / diffs.len() as f64;
                    shift_n += 1;
                }
            }
            _ => {}
        }
        Ok(common < DRIFT_SAMPLE)
    })?;
    let mut passed = true;
    let mut parts = vec![format!(
        "{common} entities in both v{version} and live v{live}"
    )];
    // A mean against its threshold, when both exist. A threshold with no
    // entity in both versions cannot be checked: it fails rather than
    // passing unchecked (ids whose type or column changed match nothing).
    let mut judge = |max: Option<f64>, sum: f64, n: usize, what: &str, setting: &str, digits| {
        if max.is_some() && common == 0 {
            passed = false;
            parts.push(format!(
                "{setting} cannot be checked: no entity of v{version} is in live v{live} \
                 (did the id column or its type change?); remove {setting} for a run over \
                 other entities"
            ));
        } else if let Some(max) = max
            && n > 0
        {
            let mean = sum / n as f64;
            passed &= mean <= max;
            parts.push(format!("mean {what} {mean:.digits$} ({setting} {max})"));
        }
    };
    let cfg = &plan.cfg;
    judge(
        cfg.max_topk_churn,
        churn_sum,
        churn_n,
        "top-K churn",
        "max_topk_churn",
        4,
    );
    judge(
        cfg.max_mean_shift,
        shift_sum,
        shift_n,
        "score shift",
        "max_mean_shift",
        6,
    );
    Ok(Check {
        name: "drift".into(),
        passed,
        detail: parts.join("; "),
        examples: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_finds_input_keys_asked_in_any_order() {
        let keys = [2u64, 4, 6, 8, 10];
        let mut walk = 0;
        // Ascending, as a scan asks: a hit, a gap, keys past the end.
        let find = |key: u64, walk: &mut usize| find_from(&keys, |k| k.cmp(&key), walk);
        let found: Vec<bool> = [1, 2, 3, 4, 8, 9, 10, 11]
            .iter()
            .map(|&k| find(k, &mut walk))
            .collect();
        assert_eq!(found, [false, true, false, true, true, false, true, false]);
        assert_eq!(walk, keys.len());
        // Going back still finds what is there, and nothing that is not.
        assert!(find(6, &mut walk));
        assert!(!find(7, &mut walk));
        let mut walk = 0;
        assert!(find(10, &mut walk));
        assert!(find(2, &mut walk));
        assert!(!find_from(&[] as &[u64], |k| k.cmp(&1), &mut 0));
    }

    #[test]
    fn input_keys_answer_alike_whether_the_ids_ascend_or_not() {
        // The store's keys: integer ids big-endian, string ids as bytes.
        let int = |i: u64| i.to_be_bytes().to_vec();
        let ascending = EntityIds::Int(vec![3, 5, 9, 12]);
        let shuffled = EntityIds::Int(vec![12, 5, 9, 3, 5]);
        let strs = |v: &[&str]| EntityIds::Str(v.iter().map(|s| s.to_string()).collect());
        let ascending_str = strs(&["a", "ab", "b", "zz"]);
        let shuffled_str = strs(&["zz", "ab", "a", "b", "ab"]);
        let cases = [
            (&ascending, &shuffled, (0..15).map(int).collect::<Vec<_>>()),
            (
                &ascending_str,
                &shuffled_str,
                ["", "a", "aa", "ab", "b", "c", "zz", "zzz"]
                    .iter()
                    .map(|s| s.as_bytes().to_vec())
                    .collect(),
            ),
        ];
        for (sorted, unsorted, asked) in cases {
            let (a, b) = (InputKeys::of(sorted), InputKeys::of(unsorted));
            // The ascending ids are borrowed, not copied.
            assert!(matches!(
                a,
                InputKeys::Int(Cow::Borrowed(_)) | InputKeys::StrAscending(_)
            ));
            assert!(!matches!(
                b,
                InputKeys::Int(Cow::Borrowed(_)) | InputKeys::StrAscending(_)
            ));
            assert_eq!(a.len(), 4);
            assert_eq!(b.len(), 4);
            let (mut wa, mut wb) = (0, 0);
            for key in &asked {
                let want = match sorted {
                    EntityIds::Int(v) => v.iter().any(|i| int(*i) == *key),
                    EntityIds::Str(v) => v.iter().any(|s| s.as_bytes() == key.as_slice()),
                };
                assert_eq!(a.contains(key, &mut wa), want, "{key:?}");
                assert_eq!(b.contains(key, &mut wb), want, "{key:?}");
            }
        }
    }

    #[test]
    fn tied_items_may_swap_but_untied_may_not() {
        let expected = Value::TopK(vec![(1, 0.9), (2, 0.5), (3, 0.5), (4, 0.1)]);
        let swapped = Value::TopK(vec![(1, 0.9), (3, 0.5), (2, 0.5), (4, 0.1)]);
        assert!(compare(&swapped, &expected, 1e-5).is_ok());
        let wrong = Value::TopK(vec![(4, 0.9), (2, 0.5), (3, 0.5), (1, 0.1)]);
        let err = compare(&wrong, &expected, 1e-5).unwrap_err();
        assert!(err.contains("position 0"), "{err}");
    }

    #[test]
    fn tie_at_the_cut_allows_a_different_last_item() {
        let expected = Value::TopK(vec![(1, 0.9), (2, 0.5)]);
        let other_tied = Value::TopK(vec![(1, 0.9), (7, 0.5)]);
        assert!(compare(&other_tied, &expected, 1e-5).is_ok());
        let not_tied = Value::TopK(vec![(1, 0.9), (7, 0.4)]);
        assert!(compare(&not_tied, &expected, 1e-5).is_err());
    }

    #[test]
    fn tolerance_is_relative_for_large_scores() {
        assert!(close(1000.5, 1000.0, 1e-3));
        assert!(!close(0.01, 0.0, 1e-3));
        // The same non-finite score on both sides agrees; the `finite`
        // check judges it.
        assert!(close(f32::INFINITY, f32::INFINITY, 1e-3));
        assert!(close(f32::NAN, f32::NAN, 1e-3));
        assert!(!close(f32::INFINITY, f32::NEG_INFINITY, 1e-3));
        assert!(!close(f32::NAN, 1.0, 1e-3));
        let err = compare(
            &Value::Scores(vec![1.0, 2.0]),
            &Value::Scores(vec![1.0, 2.5]),
            1e-3,
        )
        .unwrap_err();
        assert!(err.contains("score[1]"), "{err}");
    }
}
