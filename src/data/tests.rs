use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{GenericListBuilder, Int64Builder, ListBuilder};
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int32Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use super::r#gen::{GenKind, GenOptions, generate, item_id};
use super::*;
use crate::config::Input;

fn input(path: &Path, id: &str, history: Option<&str>, features: Option<&[&str]>) -> Input {
    Input {
        path: crate::config::Location::Local(path.to_path_buf()),
        read: crate::config::ReadMode::Auto,
        storage: Default::default(),
        id_column: id.to_string(),
        history_column: history.map(str::to_string),
        feature_columns: features.map(|f| f.iter().map(|s| s.to_string()).collect()),
        on_invalid: crate::config::OnInvalid::Error,
    }
}

fn small_two_tower(users: u64, row_group_rows: usize) -> GenOptions {
    GenOptions {
        users,
        items: 2_000,
        dim: 8,
        features: 3,
        hidden: 16,
        row_group_rows,
        ..GenOptions::defaults(GenKind::TwoTower)
    }
}

fn generated(dir: &Path, opts: &GenOptions) -> (PathBuf, PathBuf) {
    let data = dir.join("data/users.parquet");
    let weights = dir.join("models/model.safetensors");
    let summary = generate(opts, &data, &weights).unwrap();
    assert_eq!(summary.rows, opts.users);
    assert_eq!(summary.data_bytes, std::fs::metadata(&data).unwrap().len());
    assert_eq!(
        summary.weights_bytes,
        std::fs::metadata(&weights).unwrap().len()
    );
    (data, weights)
}

fn two_tower_dataset(dir: &Path, users: u64, row_group_rows: usize) -> Dataset {
    let (data, _) = generated(dir, &small_two_tower(users, row_group_rows));
    Dataset::open(&input(&data, "user_id", Some("history"), None), true).unwrap()
}

/// Writes `batches` (one row group each) to `dir/name`.
fn write_parquet(dir: &Path, name: &str, batches: &[RecordBatch]) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    let props = WriterProperties::builder().build();
    let mut writer = ArrowWriter::try_new(file, batches[0].schema(), Some(props)).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
        writer.flush().unwrap();
    }
    writer.close().unwrap();
    path
}

/// `batch` written to `path` with `props`.
fn write_with(path: &Path, batch: &RecordBatch, props: WriterProperties) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter_with_nullable(columns.into_iter().map(|(n, a)| (n, a, true)))
        .unwrap()
}

#[test]
fn gen_same_options_same_bytes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    for kind in [GenKind::TwoTower, GenKind::Mlp] {
        let opts = GenOptions {
            users: 3_000,
            items: 500,
            dim: 8,
            features: 5,
            hidden: 16,
            row_group_rows: 1_000,
            ..GenOptions::defaults(kind)
        };
        let (data_a, weights_a) = generated(a.path(), &opts);
        let (data_b, weights_b) = generated(b.path(), &opts);
        let read = |p: &Path| std::fs::read(p).unwrap();
        assert!(read(&data_a) == read(&data_b), "{kind:?} data differs");
        assert!(
            read(&weights_a) == read(&weights_b),
            "{kind:?} weights differ"
        );

        let other_seed = GenOptions { seed: 7, ..opts };
        let (data_c, weights_c) = generated(c.path(), &other_seed);
        assert!(
            read(&data_a) != read(&data_c),
            "{kind:?}: the seed is ignored"
        );
        assert!(read(&weights_a) != read(&weights_c));
    }
}

#[test]
fn gen_leaves_no_temp_files_and_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_two_tower(100, 50);
    generated(dir.path(), &opts);
    generated(dir.path(), &opts);
    for sub in ["data", "models"] {
        let names: Vec<_> = std::fs::read_dir(dir.path().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1, "{sub}: {names:?}");
        assert!(!names[0].ends_with(".tmp"));
    }
}

#[test]
fn gen_rejects_options_it_cannot_honour() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.parquet");
    let weights = dir.path().join("w.safetensors");
    let cases = [
        (
            "row_group_rows",
            GenOptions {
                row_group_rows: 0,
                ..small_two_tower(10, 10)
            },
        ),
        (
            "items",
            GenOptions {
                items: 0,
                ..small_two_tower(10, 10)
            },
        ),
        (
            "dim",
            GenOptions {
                dim: 0,
                ..small_two_tower(10, 10)
            },
        ),
        (
            "features",
            GenOptions {
                features: 0,
                ..GenOptions::defaults(GenKind::Mlp)
            },
        ),
    ];
    for (option, opts) in cases {
        let err = generate(&opts, &data, &weights).unwrap_err();
        assert!(
            matches!(&err, Error::GenOption { option: o, .. } if *o == option),
            "{option}: {err}"
        );
    }
    assert!(!data.exists() && !weights.exists());
}

#[test]
fn gen_two_tower_history_is_heavy_tailed_and_realistic() {
    let dir = tempfile::tempdir().unwrap();
    let opts = GenOptions {
        users: 6_000,
        items: 5_000,
        row_group_rows: 1_000,
        ..small_two_tower(0, 1)
    };
    let (data, _) = generated(dir.path(), &opts);
    let dataset = Dataset::open(&input(&data, "user_id", Some("history"), None), true).unwrap();
    let rows = dataset.read_rows(0..opts.users).unwrap();
    let lens: Vec<usize> = (0..rows.len()).map(|i| rows.history_of(i).len()).collect();

    let mut sorted = lens.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    assert!((5..=30).contains(&median), "median history length {median}");
    let heavy: Vec<usize> = (0..lens.len()).filter(|&i| lens[i] > 10 * median).collect();
    let heavy_share = heavy.len() as f64 / lens.len() as f64;
    assert!(
        (0.03..0.08).contains(&heavy_share),
        "{heavy_share} of users have a history over 10x the median ({median})"
    );
    assert!(*sorted.last().unwrap() as u64 <= r#gen::MAX_HISTORY_LEN);
    assert!(
        *sorted.last().unwrap() >= 1_000,
        "no history in the thousands"
    );
    let empty = lens.iter().filter(|&&l| l == 0).count() as f64 / lens.len() as f64;
    assert!((0.003..0.03).contains(&empty), "{empty} empty histories");

    // Heavy users are spread through the file, not bunched at one end.
    let per_group = dataset.num_rows() as usize / dataset.num_row_groups();
    for group in 0..dataset.num_row_groups() {
        let in_group = heavy.iter().filter(|&&i| i / per_group == group).count();
        assert!(
            in_group >= 10,
            "row group {group} has {in_group} heavy users"
        );
    }

    // About 1% of history ids are outside the catalogue; items repeat; the
    // most popular item is far more common than the median one.
    let catalogue: std::collections::HashSet<u32> = (0..opts.items).map(item_id).collect();
    let total = rows.history_items.len() as f64;
    let missing = rows
        .history_items
        .iter()
        .filter(|i| !catalogue.contains(i))
        .count() as f64;
    assert!(
        (0.005..0.02).contains(&(missing / total)),
        "{} missing",
        missing / total
    );
    let repeats = (0..rows.len())
        .filter(|&i| {
            let h = rows.history_of(i);
            let distinct: std::collections::HashSet<_> = h.iter().collect();
            distinct.len() < h.len()
        })
        .count();
    assert!(
        repeats as f64 / rows.len() as f64 > 0.2,
        "{repeats} users repeat an item"
    );
    let mut counts = std::collections::HashMap::new();
    for item in &rows.history_items {
        *counts.entry(*item).or_insert(0u64) += 1;
    }
    let mut counts: Vec<u64> = counts.into_values().collect();
    counts.sort_unstable();
    let (top, mid) = (counts[counts.len() - 1], counts[counts.len() / 2]);
    assert!(
        top > 50 * mid,
        "most popular item {top}x, median item {mid}x"
    );
}

#[test]
fn gen_weights_have_the_documented_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_two_tower(10, 10);
    let (_, weights) = generated(dir.path(), &opts);
    let bytes = std::fs::read(&weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = |name: &str| st.tensor(name).unwrap().shape().to_vec();
    let (items, dim, f, h) = (opts.items as usize, opts.dim, opts.features, opts.hidden);
    assert_eq!(shape("item_embeddings"), [items, dim]);
    assert_eq!(shape("item_ids"), [items]);
    assert_eq!(shape("user_tower.0.weight"), [h, dim + f]);
    assert_eq!(shape("user_tower.0.bias"), [h]);
    assert_eq!(shape("user_tower.2.weight"), [dim, h]);
    assert_eq!(shape("user_tower.2.bias"), [dim]);
    assert_eq!(st.len(), 6);
    let ids = st.tensor("item_ids").unwrap();
    assert_eq!(ids.dtype(), safetensors::Dtype::I64);
    let ids: Vec<i64> = ids
        .data()
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(ids[0], 10);
    assert_eq!(ids[items - 1], 10 + 3 * (items as i64 - 1));
    // Weights are small: within ±1/sqrt(fan_in).
    let w = st.tensor("user_tower.0.weight").unwrap();
    let bound = 1.0 / ((dim + f) as f32).sqrt();
    assert!(
        w.data()
            .chunks(4)
            .all(|c| { f32::from_le_bytes(c.try_into().unwrap()).abs() <= bound })
    );

    let mlp = GenOptions {
        users: 10,
        features: 6,
        hidden: 5,
        ..GenOptions::defaults(GenKind::Mlp)
    };
    let (data, weights) = generated(dir.path(), &mlp);
    let bytes = std::fs::read(&weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = |name: &str| st.tensor(name).unwrap().shape().to_vec();
    assert_eq!(shape("0.weight"), [5, 6]);
    assert_eq!(shape("0.bias"), [5]);
    assert_eq!(shape("2.weight"), [5, 5]);
    assert_eq!(shape("4.weight"), [1, 5]);
    assert_eq!(shape("4.bias"), [1]);
    let dataset = Dataset::open(&input(&data, "entity_id", None, None), false).unwrap();
    assert_eq!(
        dataset.feature_names(),
        ["f0", "f1", "f2", "f3", "f4", "f5"]
    );
    assert!(!dataset.has_history());
    let rows = dataset.read_rows(0..10).unwrap();
    assert_eq!(rows.ids, EntityIds::Int((0..10).collect()));
    assert!(rows.history_offsets.is_empty());
}

#[test]
fn read_rows_across_row_group_boundaries_equals_a_full_read() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = two_tower_dataset(dir.path(), 3_500, 1_000);
    assert_eq!(dataset.num_rows(), 3_500);
    assert_eq!(dataset.num_row_groups(), 4);
    assert_eq!(dataset.row_group_starts(), [0, 1_000, 2_000, 3_000, 3_500]);
    assert_eq!(dataset.feature_names(), ["f0", "f1", "f2"]);
    let full = dataset.read_rows(0..3_500).unwrap();
    assert_eq!(full.ids, EntityIds::Int((0..3_500).collect()));
    assert_eq!(full.history_offsets.len(), 3_501);
    assert_eq!(full.features.len(), 3_500 * 3);
    assert!(full.features.iter().all(|v| (-1.0..1.0).contains(v)));

    for (start, end) in [
        (0, 1),
        (999, 1_001),
        (500, 2_600),
        (1_000, 2_000),
        (2_999, 3_500),
        (3_499, 3_500),
        (0, 3_500),
        (1_234, 1_234),
    ] {
        let part = dataset.read_rows(start..end).unwrap();
        assert_eq!(
            part,
            full.slice(start as usize..end as usize),
            "rows {start}..{end}"
        );
    }
}

#[test]
fn read_rows_decodes_only_the_row_groups_it_overlaps() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = two_tower_dataset(dir.path(), 3_500, 1_000);
    for (range, groups) in [
        (0..1, 1),
        (999..1_001, 2),
        (1_000..2_000, 1),
        (1_500..3_100, 3),
        (3_000..3_500, 1),
        (0..3_500, 4),
        (10..10, 0),
    ] {
        let before = dataset.row_groups_decoded();
        dataset.read_rows(range.clone()).unwrap();
        assert_eq!(
            dataset.row_groups_decoded() - before,
            groups,
            "rows {range:?}"
        );
    }
}

#[test]
fn plan_read_picks_overlapping_row_groups() {
    // Row groups: 0..10, 10..10 (empty), 10..25, 25..30.
    let starts = [0, 10, 10, 25, 30];
    let plan = |s, e| plan_read(&starts, &(s..e));
    assert_eq!(
        plan(0, 10),
        ReadPlan {
            row_groups: vec![0],
            skip: 0
        }
    );
    assert_eq!(
        plan(9, 11),
        ReadPlan {
            row_groups: vec![0, 1, 2],
            skip: 9
        }
    );
    assert_eq!(
        plan(10, 25),
        ReadPlan {
            row_groups: vec![2],
            skip: 0
        }
    );
    assert_eq!(
        plan(12, 13),
        ReadPlan {
            row_groups: vec![2],
            skip: 2
        }
    );
    assert_eq!(
        plan(24, 30),
        ReadPlan {
            row_groups: vec![2, 3],
            skip: 14
        }
    );
    assert_eq!(
        plan(29, 30),
        ReadPlan {
            row_groups: vec![3],
            skip: 4
        }
    );
}

#[test]
fn read_rows_out_of_bounds_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = two_tower_dataset(dir.path(), 100, 40);
    let err = dataset.read_rows(90..101).unwrap_err();
    assert!(
        matches!(err, Error::RangeOutOfBounds { rows: 100, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("100 rows"), "{err}");
}

#[test]
fn scan_index_matches_a_full_read() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = two_tower_dataset(dir.path(), 2_500, 1_000);
    let index = dataset.scan_index().unwrap();
    let full = dataset.read_rows(0..2_500).unwrap();
    assert_eq!(index.ids, full.ids);
    let lens: Vec<u32> = full
        .history_offsets
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert_eq!(*index.history_lens, *lens);
    assert!(index.history_lens.contains(&0));
    assert_eq!(dataset.row_groups_decoded(), 3 + 3);
}

#[test]
fn string_ids_of_0_or_more_than_511_bytes_are_refused_naming_file_row_and_length() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("\x1b]0;{}", "x".repeat(100_000));
    for (bad, len) in [("", 0usize), (long.as_str(), long.len())] {
        let ids = StringArray::from(vec!["a", "b", bad, "c"]);
        let path = write_parquet(
            dir.path(),
            "ids.parquet",
            &[batch(vec![("id", Arc::new(ids) as ArrayRef)])],
        );
        let ds = Dataset::open(&input(&path, "id", None, Some(&[])), false).unwrap();
        let e = ds.scan_index().unwrap_err().to_string();
        assert!(e.contains("ids.parquet") && e.contains("row 2"), "{e}");
        assert!(
            e.contains(&format!("is {len} bytes")) && e.contains("511"),
            "{e}"
        );
        assert!(
            e.len() < 500,
            "the message shows the whole id: {} bytes",
            e.len()
        );
        assert!(!e.chars().any(char::is_control), "{e:?}");
    }
    // 511 bytes are an id.
    let ids = StringArray::from(vec!["y".repeat(MAX_ID_BYTES)]);
    let path = write_parquet(
        dir.path(),
        "ok.parquet",
        &[batch(vec![("id", Arc::new(ids) as ArrayRef)])],
    );
    let ds = Dataset::open(&input(&path, "id", None, Some(&[])), false).unwrap();
    assert_eq!(ds.scan_index().unwrap().ids.len(), 1);
}

#[test]
fn string_ids_nulls_and_other_numeric_types_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let make = |ids: Vec<&str>, hist: Vec<Option<Vec<i64>>>, a: Vec<f64>, b: Vec<i32>| {
        let flags: Vec<bool> = b.iter().map(|v| v % 2 == 0).collect();
        let mut history = GenericListBuilder::<i64, _>::new(Int64Builder::new());
        for h in hist {
            match h {
                Some(items) => {
                    history.values().append_slice(&items);
                    history.append(true);
                }
                None => history.append(false),
            }
        }
        batch(vec![
            ("a", Arc::new(Float64Array::from(a)) as ArrayRef),
            ("name", Arc::new(StringArray::from(ids))),
            ("seen", Arc::new(history.finish())),
            ("b", Arc::new(Int32Array::from(b))),
            ("even", Arc::new(BooleanArray::from(flags))),
        ])
    };
    let path = write_parquet(
        dir.path(),
        "str.parquet",
        &[
            make(
                vec!["alice", "bob"],
                vec![Some(vec![5, 6, 5]), None],
                vec![0.5, 1.5],
                vec![1, -2],
            ),
            make(
                vec!["carol", "dave", "erin"],
                vec![Some(vec![]), Some(vec![4_000_000_000]), Some(vec![7])],
                vec![2.5, 3.5, 4.5],
                vec![3, 4, 5],
            ),
        ],
    );
    let dataset = Dataset::open(&input(&path, "name", Some("seen"), None), true).unwrap();
    assert_eq!(dataset.feature_names(), ["a", "b", "even"]);
    assert_eq!(dataset.num_row_groups(), 2);

    let index = dataset.scan_index().unwrap();
    let names = ["alice", "bob", "carol", "dave", "erin"].map(String::from);
    assert_eq!(index.ids, EntityIds::Str(names.to_vec()));
    assert_eq!(*index.history_lens, [3, 0, 0, 1, 1]);

    let rows = dataset.read_rows(1..4).unwrap();
    assert_eq!(rows.ids, EntityIds::Str(names[1..4].to_vec()));
    assert_eq!(
        rows.features,
        [1.5, -2.0, 1.0, 2.5, 3.0, 0.0, 3.5, 4.0, 1.0]
    );
    assert_eq!(
        rows.history_of(0),
        [] as [u32; 0],
        "a null history is empty"
    );
    assert_eq!(rows.history_of(1), [] as [u32; 0]);
    assert_eq!(rows.history_of(2), [4_000_000_000u32]);
    assert_eq!(dataset.read_rows(0..1).unwrap().history_of(0), [5, 6, 5]);

    // Explicit feature columns keep the order given.
    let ordered =
        Dataset::open(&input(&path, "name", Some("seen"), Some(&["b", "a"])), true).unwrap();
    assert_eq!(ordered.read_rows(4..5).unwrap().features, [5.0, 4.5]);
}

#[test]
fn missing_column_lists_the_columns_the_file_has() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = generated(dir.path(), &small_two_tower(10, 10));
    let cases = [
        input(&data, "uid", Some("history"), None),
        input(&data, "user_id", Some("hist"), None),
        input(&data, "user_id", Some("history"), Some(&["f0", "f9"])),
    ];
    for (case, missing) in cases.iter().zip(["uid", "hist", "f9"]) {
        let err = Dataset::open(case, true).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::UnknownColumn { .. }), "{text}");
        assert!(
            text.contains(&format!("'{missing}' is not in the file")),
            "{text}"
        );
        assert!(
            text.contains("'user_id', 'history', 'f0', 'f1', 'f2'"),
            "{text}"
        );
        assert!(text.contains(&data.display().to_string()), "{text}");
    }
    let err = Dataset::open(&input(&data, "user_id", None, None), true).unwrap_err();
    assert!(matches!(err, Error::NoHistoryColumn { .. }), "{err}");
}

#[test]
fn wrong_column_types_name_the_column_and_the_types() {
    let dir = tempfile::tempdir().unwrap();
    let mut floats = ListBuilder::new(arrow_array::builder::Float32Builder::new());
    floats.values().append_value(1.0);
    floats.append(true);
    let path = write_parquet(
        dir.path(),
        "types.parquet",
        &[batch(vec![
            ("id", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
            ("uid", Arc::new(Int32Array::from(vec![1]))),
            ("label", Arc::new(StringArray::from(vec!["x"]))),
            ("hist", Arc::new(floats.finish())),
        ])],
    );
    let cases = [
        (input(&path, "id", None, None), "id", "Float64", "id column"),
        (
            input(&path, "uid", Some("hist"), Some(&[])),
            "hist",
            "List",
            "history column",
        ),
        (
            input(&path, "uid", None, Some(&["label"])),
            "label",
            "Utf8",
            "feature column",
        ),
        // With no feature list, every other column is a feature.
        (
            input(&path, "uid", None, None),
            "label",
            "Utf8",
            "feature column",
        ),
    ];
    for (case, column, found, role) in cases {
        let needs_history = case.history_column.is_some();
        let err = Dataset::open(&case, needs_history).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, Error::ColumnType { column: c, role: r, .. } if c == column && *r == role),
            "{text}"
        );
        assert!(
            text.contains(&format!("column '{column}' has type {found}")),
            "{text}"
        );
    }
    // The history type is checked even when the model does not read it.
    let err = Dataset::open(&input(&path, "uid", Some("hist"), Some(&[])), false).unwrap_err();
    assert!(matches!(err, Error::ColumnType { .. }), "{err}");
}

#[test]
fn bad_values_name_the_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let two_groups = |name: &str, ids: [Option<i32>; 4], f: [Option<f64>; 4], h: [i64; 4]| {
        let make = |r: std::ops::Range<usize>| {
            let mut history = GenericListBuilder::<i32, _>::new(Int64Builder::new());
            for i in r.clone() {
                history.values().append_slice(&[1, h[i]]);
                history.append(true);
            }
            batch(vec![
                (
                    "id",
                    Arc::new(Int32Array::from(ids[r.clone()].to_vec())) as ArrayRef,
                ),
                ("h", Arc::new(history.finish())),
                ("f", Arc::new(Float64Array::from(f[r].to_vec()))),
            ])
        };
        write_parquet(dir.path(), name, &[make(0..2), make(2..4)])
    };
    let ok_f = [Some(0.0); 4];
    let ok_h = [1; 4];
    let open = |p: &Path| Dataset::open(&input(p, "id", Some("h"), None), true).unwrap();

    let path = two_groups(
        "neg.parquet",
        [Some(0), Some(1), Some(2), Some(-5)],
        ok_f,
        ok_h,
    );
    let err = open(&path).scan_index().unwrap_err();
    assert!(
        matches!(
            err,
            Error::NegativeId {
                row: 3,
                value: -5,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("'id', row 3"), "{err}");
    let err = open(&path).read_rows(2..4).unwrap_err();
    assert!(matches!(err, Error::NegativeId { row: 3, .. }), "{err}");
    assert!(open(&path).read_rows(0..3).is_ok());

    let path = two_groups(
        "null.parquet",
        [Some(0), Some(1), None, Some(3)],
        ok_f,
        ok_h,
    );
    let err = open(&path).read_rows(1..4).unwrap_err();
    assert!(matches!(err, Error::NullId { row: 2, .. }), "{err}");

    let f = [Some(0.0), None, Some(1.0), Some(1.0)];
    let path = two_groups(
        "nullf.parquet",
        [Some(0), Some(1), Some(2), Some(3)],
        f,
        ok_h,
    );
    let err = open(&path).read_rows(0..4).unwrap_err();
    assert!(
        matches!(&err, Error::NullFeature { row: 1, column, .. } if column == "f"),
        "{err}"
    );
    assert!(
        open(&path).scan_index().is_ok(),
        "the index reads no features"
    );

    let h = [1, 1, 1, -7];
    let path = two_groups(
        "item.parquet",
        [Some(0), Some(1), Some(2), Some(3)],
        ok_f,
        h,
    );
    let err = open(&path).scan_index().unwrap_err();
    assert!(
        matches!(&err, Error::HistoryItemOutOfRange { row: 3, value: -7, column, .. } if column == "h"),
        "{err}"
    );
    let h = [1, 1 << 33, 1, 1];
    let path = two_groups("big.parquet", [Some(0), Some(1), Some(2), Some(3)], ok_f, h);
    let err = open(&path).read_rows(0..2).unwrap_err();
    assert!(
        matches!(err, Error::HistoryItemOutOfRange { row: 1, .. }),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let err = Dataset::open(
        &input(Path::new("/nonexistent/x.parquet"), "id", None, None),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/x.parquet"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not.parquet");
    std::fs::write(&path, b"hello").unwrap();
    let err = Dataset::open(&input(&path, "id", None, None), false).unwrap_err();
    assert!(matches!(err, Error::Parquet { .. }), "{err}");
}

#[test]
fn rng_is_repeatable_in_range_and_uniform() {
    let mut rng = r#gen::Rng::new(0);
    let first = rng.next_u64();
    let mut again = r#gen::Rng::new(0);
    assert_eq!(first, again.next_u64());
    assert_ne!(first, rng.next_u64());
    for n in [1u64, 2, 3, 1_000, u64::MAX] {
        assert!((0..1_000).all(|_| rng.below(n) < n));
    }
    let draws: Vec<u64> = (0..6_000).map(|_| rng.below(6)).collect();
    for face in 0..6 {
        let count = draws.iter().filter(|&&d| d == face).count();
        assert!((800..1_200).contains(&count), "face {face}: {count}");
    }
}

#[test]
fn dataset_and_errors_cross_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Dataset>();
    shareable::<Index>();
    shareable::<Error>();
}

#[test]
fn any_range_reads_the_same_rows_as_a_full_read() {
    use proptest::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let dataset = two_tower_dataset(dir.path(), 1_000, 97);
    let full = dataset.read_rows(0..1_000).unwrap();
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    proptest!(config, |(a in 0u64..=1_000, b in 0u64..=1_000)| {
        let (start, end) = (a.min(b), a.max(b));
        let before = dataset.row_groups_decoded();
        let part = dataset.read_rows(start..end).unwrap();
        prop_assert_eq!(part, full.slice(start as usize..end as usize));
        let overlapping = (0..dataset.num_row_groups())
            .filter(|&g| {
                // An empty range reads nothing, even inside a row group.
                let s = dataset.row_group_starts();
                start < end && s[g] < end && s[g + 1] > start
            })
            .count() as u64;
        prop_assert_eq!(dataset.row_groups_decoded() - before, overlapping);
    });
}

#[test]
fn features_are_laid_out_row_after_row_across_transpose_blocks() {
    // Rows: 603 (two whole blocks of 256 and a short one whose rows are not
    // a multiple of eight), 264 (a second block of exactly eight), 5 (no
    // whole square) and none; columns: 3, 9 and 19 (short of or past the
    // eight a square of the SIMD path takes), 8 and 64 (whole squares).
    for (rows, width) in [(603, 3), (603, 8), (603, 19), (5, 64), (0, 9), (264, 64)] {
        let columns: Vec<Vec<f32>> = (0..width)
            .map(|j| (0..rows).map(|r| (r * 100 + j) as f32).collect())
            .collect();
        let views: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
        let mut out = vec![f32::NAN; rows * width];
        assert!(
            decode::transpose(&views, &mut out, true),
            "{rows} x {width}"
        );
        for r in 0..rows {
            for j in 0..width {
                assert_eq!(
                    out[r * width + j],
                    (r * 100 + j) as f32,
                    "{rows} x {width}: row {r} feature {j}"
                );
            }
        }
    }
    // A non-finite value (an infinity of either sign, a NaN) is seen when
    // checked, and only then, in the first block or the last, in a square
    // or in the columns and rows left over; the largest finite value is not.
    let cases = [
        (555, 2, f32::INFINITY),
        (601, 2, f32::NEG_INFINITY),
        (555, 17, f32::NAN),
        (3, 5, f32::NAN),
        (300, 7, -f32::NAN),
        (3, 18, f32::INFINITY),
    ];
    for (row, col, bad) in cases {
        let (rows, width) = (603, 19);
        let mut columns: Vec<Vec<f32>> = (0..width).map(|_| vec![1.0; rows]).collect();
        columns[col][row] = bad;
        let views: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
        let mut out = vec![f32::NAN; rows * width];
        assert!(
            !decode::transpose(&views, &mut out, true),
            "row {row} col {col}"
        );
        assert!(decode::transpose(&views, &mut out, false));
        assert_eq!(out[row * width + col].to_bits(), bad.to_bits());
    }
    let mut columns: Vec<Vec<f32>> = (0..19).map(|_| vec![f32::MAX; 603]).collect();
    columns[4][10] = f32::MIN;
    columns[6][600] = -0.0;
    let views: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
    assert!(decode::transpose(&views, &mut vec![0.0; 603 * 19], true));
}

#[test]
fn page_checksums_are_checked_when_a_file_has_them() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parquet");
    let open = |name: &str| {
        Dataset::open(&input(&fixtures.join(name), "entity_id", None, None), false).unwrap()
    };
    let rows = open("page-checksums.parquet").read_rows(0..100).unwrap();
    assert_eq!(
        rows.features_of(7),
        [10.0 / 13.0, 11.0 / 13.0, 12.0 / 13.0, 0.0]
    );
    let err = open("page-checksum-mismatch.parquet")
        .read_rows(0..100)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("page-checksum-mismatch.parquet") && err.contains("CRC checksum mismatch"),
        "{err}"
    );
}

#[test]
fn dictionary_encoded_string_ids_read_as_strings() {
    use arrow_array::DictionaryArray;
    use arrow_array::types::Int32Type;
    let dir = tempfile::tempdir().unwrap();
    // pandas' Categorical: each id once, stored as a dictionary of strings.
    let ids: DictionaryArray<Int32Type> = ["u-c", "u-a", "u-b", "u-d"].into_iter().collect();
    let path = write_parquet(
        dir.path(),
        "cat.parquet",
        &[batch(vec![
            ("id", Arc::new(ids) as ArrayRef),
            ("f", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0]))),
        ])],
    );
    let dataset = Dataset::open(&input(&path, "id", None, None), false).unwrap();
    let want = EntityIds::Str(["u-c", "u-a", "u-b", "u-d"].map(String::from).to_vec());
    assert_eq!(dataset.scan_index().unwrap().ids, want);
    let rows = dataset.read_rows(1..3).unwrap();
    assert_eq!(rows.ids, EntityIds::Str(vec!["u-a".into(), "u-b".into()]));
    assert_eq!(rows.features, [2.0, 3.0]);
}

/// `all` written three ways into `dir`: data pages v1 with snappy, v2 with
/// zstd, v1 uncompressed without dictionaries; the column `plain` never
/// dictionary encoded; row groups of 1,000 rows, pages of 97.
fn write_page_kinds(dir: &Path, all: &RecordBatch) -> Vec<PathBuf> {
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterVersion;
    let writers = [
        ("v1-snappy", WriterVersion::PARQUET_1_0, Compression::SNAPPY),
        (
            "v2-zstd",
            WriterVersion::PARQUET_2_0,
            Compression::ZSTD(ZstdLevel::default()),
        ),
        (
            "v1-plain",
            WriterVersion::PARQUET_1_0,
            Compression::UNCOMPRESSED,
        ),
    ];
    let mut paths = Vec::new();
    for (name, version, codec) in writers {
        let path = dir.join(format!("{name}.parquet"));
        let props = WriterProperties::builder()
            .set_writer_version(version)
            .set_compression(codec)
            .set_dictionary_enabled(name != "v1-plain")
            .set_column_dictionary_enabled("plain".into(), false)
            .set_max_row_group_row_count(Some(1_000))
            .set_data_page_row_count_limit(97)
            .set_write_batch_size(97)
            .build();
        write_with(&path, all, props);
        paths.push(path);
    }
    paths
}

/// Files whose feature columns the picker reads ([`PartView::pick_features`]):
/// plain and dictionary pages, f32 and f64, required and optional columns,
/// data pages v1 and v2, several pages a column chunk, three codecs.
#[test]
fn features_picked_from_their_pages_are_those_arrow_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3_000usize;
    let ids = Arc::new(arrow_array::Int64Array::from_iter_values(0..n as i64)) as ArrayRef;
    let plain = Arc::new(arrow_array::Float32Array::from_iter_values(
        (0..n).map(|i| (i as f32 * 0.37).sin() * 1e3),
    )) as ArrayRef;
    let few = Arc::new(arrow_array::Float32Array::from_iter_values(
        (0..n).map(|i| (i % 7) as f32 - 3.5),
    )) as ArrayRef;
    let double = Arc::new(Float64Array::from_iter_values(
        (0..n).map(|i| i as f64 / 3.0 - 400.0),
    )) as ArrayRef;
    let fields = vec![
        arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
        arrow_schema::Field::new("plain", arrow_schema::DataType::Float32, false),
        arrow_schema::Field::new("few", arrow_schema::DataType::Float32, true),
        arrow_schema::Field::new("double", arrow_schema::DataType::Float64, true),
    ];
    let schema = Arc::new(arrow_schema::Schema::new(fields));
    let all = RecordBatch::try_new(schema.clone(), vec![ids, plain, few, double]).unwrap();
    for path in write_page_kinds(dir.path(), &all) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let ds = Dataset::open(
            &input(&path, "id", None, Some(&["plain", "few", "double"])),
            false,
        )
        .unwrap();
        let full = ds.read_rows(0..n as u64).unwrap();
        // Rows in every row group, in several pages of each, at the ends.
        let at: Vec<u64> = [0, 1, 96, 97, 500, 999, 1_000, 1_001, 1_777, 2_998, 2_999].into();
        let view = PartView {
            part: &ds.parts[0],
            ds: &ds,
        };
        let mut picked = vec![f32::NAN; at.len() * 3];
        assert!(view.pick_features(&at, &mut picked), "{name}: not picked");
        let want: Vec<f32> = at
            .iter()
            .flat_map(|&r| full.features[r as usize * 3..r as usize * 3 + 3].to_vec())
            .collect();
        assert_eq!(picked, want, "{name}");
        // And through the read the spot check makes.
        assert_eq!(ds.read_rows_at(&at).unwrap().features, want, "{name}");
    }

    // Column chunks too large to read whole for a few rows
    // (`pick::PICK_SPAN_CHUNK_BYTES`): read a page at a time, the pages
    // before each row passed over from their headers; plain and
    // dictionary encoded, uncompressed and snappy.
    let n = 400_000usize;
    let ids = Arc::new(arrow_array::Int64Array::from_iter_values(0..n as i64)) as ArrayRef;
    let plain = Arc::new(arrow_array::Float32Array::from_iter_values(
        (0..n).map(|i| (i as f32 * 0.37).sin() * 1e3),
    )) as ArrayRef;
    let dict = Arc::new(arrow_array::Float32Array::from_iter_values(
        (0..n).map(|i| i as f32 * 0.25),
    )) as ArrayRef;
    let fields = vec![
        arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
        arrow_schema::Field::new("plain", arrow_schema::DataType::Float32, false),
        arrow_schema::Field::new("dict", arrow_schema::DataType::Float32, false),
    ];
    let schema = Arc::new(arrow_schema::Schema::new(fields));
    let all = RecordBatch::try_new(schema.clone(), vec![ids, plain, dict]).unwrap();
    for (name, codec) in [
        ("large-plain", parquet::basic::Compression::UNCOMPRESSED),
        ("large-snappy", parquet::basic::Compression::SNAPPY),
    ] {
        let path = dir.path().join(format!("{name}.parquet"));
        let props = WriterProperties::builder()
            .set_compression(codec)
            .set_column_dictionary_enabled("plain".into(), false)
            .set_column_dictionary_enabled("dict".into(), true)
            .set_dictionary_page_size_limit(4 << 20)
            .set_max_row_group_row_count(Some(n))
            .set_data_page_row_count_limit(20_000)
            .set_write_batch_size(20_000)
            .build();
        write_with(&path, &all, props);
        let ds = Dataset::open(&input(&path, "id", None, Some(&["plain", "dict"])), false).unwrap();
        let chunks = &ds.parts[0].metadata.metadata().row_group(0).columns()[1..];
        assert!(
            chunks.iter().all(|c| c.compressed_size() > 1 << 20),
            "{name}: the chunks are larger than a whole read takes"
        );
        let full = ds.read_rows(0..n as u64).unwrap();
        let at: Vec<u64> = [0, 19_999, 20_000, 123_456, 250_001, 399_999].into();
        let want: Vec<f32> = at
            .iter()
            .flat_map(|&r| full.features[r as usize * 2..r as usize * 2 + 2].to_vec())
            .collect();
        let view = PartView {
            part: &ds.parts[0],
            ds: &ds,
        };
        let mut picked = vec![f32::NAN; at.len() * 2];
        assert!(view.pick_features(&at, &mut picked), "{name}: not picked");
        assert_eq!(picked, want, "{name}");
        assert_eq!(ds.read_rows_at(&at).unwrap().features, want, "{name}");
    }

    // A null among the picked values: left to Arrow, which refuses it by
    // name (or, where nulls are read as NaN, gives NaN).
    let with_null = batch(vec![
        (
            "id",
            Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3])) as ArrayRef,
        ),
        (
            "f",
            Arc::new(arrow_array::Float32Array::from(vec![
                Some(1.0),
                None,
                Some(3.0),
            ])),
        ),
    ]);
    let path = write_parquet(dir.path(), "null.parquet", &[with_null]);
    let mut ds = Dataset::open(&input(&path, "id", None, Some(&["f"])), false).unwrap();
    let view = PartView {
        part: &ds.parts[0],
        ds: &ds,
    };
    let mut out = [0.0f32; 2];
    assert!(view.pick_features(&[0, 2], &mut out));
    assert_eq!(out, [1.0, 3.0]);
    assert!(!view.pick_features(&[1], &mut out[..1]));
    let err = ds.read_rows_at(&[0, 1]).unwrap_err().to_string();
    assert!(
        err.contains("null") && err.contains("null.parquet"),
        "{err}"
    );
    ds.set_nulls_as_nan(true);
    let rows = ds.read_rows_at(&[1, 2]).unwrap();
    assert!(rows.features[0].is_nan() && rows.features[1] == 3.0);
}

/// A reader that holds the index (the spot check) gives the rows' ids and
/// reads only their features and histories: the same features and
/// histories as a read of the whole rows, under the ids it gave.
#[test]
fn rows_read_with_known_ids_take_those_ids_and_the_same_features() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("user-{i}")).collect();
    let lists = arrow_array::ListArray::from_iter_primitive::<arrow_array::types::UInt32Type, _, _>(
        (0..6u32).map(|i| Some((0..i).map(Some).collect::<Vec<_>>())),
    );
    let data = batch(vec![
        (
            "id",
            Arc::new(arrow_array::StringArray::from(names.clone())) as ArrayRef,
        ),
        ("history", Arc::new(lists) as ArrayRef),
        (
            "f",
            Arc::new(arrow_array::Float32Array::from(vec![
                0.5, 1.5, 2.5, 3.5, 4.5, 5.5,
            ])),
        ),
    ]);
    let path = write_parquet(dir.path(), "known.parquet", &[data]);
    for history in [None, Some("history")] {
        let ds = Dataset::open(
            &input(&path, "id", history, Some(&["f"])),
            history.is_some(),
        )
        .unwrap();
        let at = [1u64, 4, 5];
        let read = ds.read_rows_at(&at).unwrap();
        let given = EntityIds::Str(vec!["a".into(), "b".into(), "c".into()]);
        let known = ds.read_rows_at_with_ids(&at, given.clone()).unwrap();
        assert_eq!(known.ids, given, "{history:?}");
        assert_eq!(
            read.ids,
            EntityIds::Str(at.iter().map(|&r| names[r as usize].clone()).collect())
        );
        assert_eq!(known.features, read.features, "{history:?}");
        assert_eq!(known.features, [1.5, 4.5, 5.5]);
        assert_eq!(known.history_offsets, read.history_offsets, "{history:?}");
        assert_eq!(known.history_items, read.history_items, "{history:?}");
        if history.is_some() {
            assert_eq!(known.history_of(1), [0, 1, 2, 3]);
        }
    }
}

/// The feature columns a read decodes from their pages ([`pages`]): plain
/// and dictionary pages, f32 and f64, required and optional columns (with
/// and without nulls), data pages v1 and v2, several pages a column chunk,
/// three codecs; ranges that start and end inside row groups and pages.
#[test]
fn features_decoded_from_their_pages_are_the_values_written() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3_000usize;
    let plain: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
    let few: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.5).collect();
    let double: Vec<f64> = (0..n).map(|i| i as f64 / 3.0 - 400.0).collect();
    // Null in rows 1_500..1_600 (a second row group's middle pages).
    let holey: Vec<Option<f32>> = (0..n)
        .map(|i| (!(1_500..1_600).contains(&i)).then_some(i as f32))
        .collect();
    let fields = vec![
        arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
        arrow_schema::Field::new("plain", arrow_schema::DataType::Float32, false),
        arrow_schema::Field::new("few", arrow_schema::DataType::Float32, true),
        arrow_schema::Field::new("double", arrow_schema::DataType::Float64, true),
        arrow_schema::Field::new("holey", arrow_schema::DataType::Float32, true),
    ];
    let schema = Arc::new(arrow_schema::Schema::new(fields));
    let all = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(arrow_array::Int64Array::from_iter_values(0..n as i64)),
            Arc::new(arrow_array::Float32Array::from(plain.clone())),
            Arc::new(arrow_array::Float32Array::from(few.clone())),
            Arc::new(Float64Array::from(double.clone())),
            Arc::new(arrow_array::Float32Array::from(holey.clone())),
        ],
    )
    .unwrap();
    let ranges = [
        0..3_000u64,
        0..1,
        1..2_999,
        96..1_001,
        97..194,
        999..1_000,
        1_000..2_000,
        1_777..2_999,
    ];
    for path in write_page_kinds(dir.path(), &all) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for nulls_as_nan in [false, true] {
            let columns: &[&str] = match nulls_as_nan {
                false => &["plain", "few", "double"],
                true => &["plain", "holey", "few", "double"],
            };
            let mut ds = Dataset::open(&input(&path, "id", None, Some(columns)), false).unwrap();
            ds.set_nulls_as_nan(nulls_as_nan);
            for range in ranges.clone() {
                let rows = range.end - range.start;
                let view = PartView {
                    part: &ds.parts[0],
                    ds: &ds,
                };
                let plan = plan_read(&ds.parts[0].row_group_starts, &range);
                let mut pages = view
                    .feature_pages(&range, &plan.row_groups, plan.skip)
                    .unwrap()
                    .expect("every feature column is one the pages are read for");
                // In pieces of 300 rows, as a worker's batches.
                let mut got = vec![f32::INFINITY; rows as usize * columns.len()];
                for start in (0..rows).step_by(300) {
                    let end = (start + 300).min(rows);
                    let out =
                        &mut got[start as usize * columns.len()..end as usize * columns.len()];
                    view.fill_from_pages(&mut pages, out, range.start + start)
                        .unwrap();
                }
                assert!(pages.decoded_here(), "{name} {range:?}: fell back to Arrow");
                let want: Vec<f32> = range
                    .clone()
                    .flat_map(|r| {
                        let r = r as usize;
                        let mut row = vec![plain[r]];
                        if nulls_as_nan {
                            row.push(holey[r].unwrap_or(f32::NAN));
                        }
                        row.extend([few[r], double[r] as f32]);
                        row
                    })
                    .collect();
                let same = |got: &[f32]| {
                    got.len() == want.len()
                        && got
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits())
                };
                assert!(same(&got), "{name} {range:?}");
                // The same through the dataset's own read.
                let read = ds.read_rows(range.clone()).unwrap().features;
                assert!(same(&read), "{name} {range:?}: read_rows");
            }
        }
    }
}

/// A value the pages cannot give (a null where nulls are refused, a NaN)
/// sends the rest of the read through Arrow, which names it; the rows
/// before it are those written.
#[test]
fn a_bad_value_among_the_pages_is_named_by_its_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2_000usize;
    let f: Vec<Option<f32>> = (0..n)
        .map(|i| match i {
            1_234 => None,
            _ => Some(i as f32),
        })
        .collect();
    let g: Vec<f32> = (0..n)
        .map(|i| if i == 1_700 { f32::NAN } else { -(i as f32) })
        .collect();
    let all = batch(vec![
        (
            "id",
            Arc::new(arrow_array::Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
        ),
        ("f", Arc::new(arrow_array::Float32Array::from(f))),
        ("g", Arc::new(arrow_array::Float32Array::from(g))),
    ]);
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(500))
        .build();
    let path = dir.path().join("bad.parquet");
    write_with(&path, &all, props);
    let mut ds = Dataset::open(&input(&path, "id", None, Some(&["f", "g"])), false).unwrap();
    let err = ds.read_rows(1_000..2_000).unwrap_err().to_string();
    assert!(
        err.contains("bad.parquet") && err.contains("'f'") && err.contains("1234"),
        "{err}"
    );
    let err = ds.read_rows(1_235..2_000).unwrap_err().to_string();
    assert!(
        err.contains("bad.parquet") && err.contains("'g'") && err.contains("1700"),
        "{err}"
    );
    assert_eq!(ds.read_rows(0..1_234).unwrap().features[2 * 1_233], 1_233.0);
    ds.set_nulls_as_nan(true);
    let rows = ds.read_rows(1_200..1_800).unwrap();
    assert!(rows.features[2 * 34].is_nan());
    assert!(rows.features[2 * 500 + 1].is_nan());
    assert_eq!(rows.features[2 * 599], 1_799.0);
}

/// Two files of ids and features `plain` and `few` (as
/// [`write_page_kinds`] writes them, data pages v1 with snappy) with a few
/// bits flipped, on which the Parquet decoder (parquet 60.1) panics: one
/// while the ids are read, one while a range of rows is. Either read fails
/// with an error naming the file; so do the worker's stream of segments
/// and a read of the same segments whole.
#[test]
fn a_file_the_parquet_decoder_panics_on_is_an_error_naming_it() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parquet");
    let open = |name: &str| {
        let columns: &[&str] = &["plain", "few"];
        Dataset::open(
            &input(&fixtures.join(name), "id", None, Some(columns)),
            false,
        )
        .unwrap()
    };
    let named = |err: Error, name: &str| {
        assert!(matches!(err, Error::DecoderPanicked { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(name) && text.contains("may be corrupt"),
            "{text}"
        );
    };
    let name = "decoder-panics-in-ids.parquet";
    named(open(name).scan_index().unwrap_err(), name);

    let name = "decoder-panics-in-rows.parquet";
    let ds = open(name);
    let index = ds.scan_index().unwrap();
    named(ds.read_rows(0..3_000).unwrap_err(), name);
    let segments = ds.segments(0..3_000, &index.ids);
    named(
        ds.stream_segments(&segments, 500, |_| true).unwrap_err(),
        name,
    );
    named(ds.read_segments(&segments).unwrap_err(), name);
}

/// Values of required PLAIN columns read where they lie in the file
/// ([`peek::peek_chunk`]): uncompressed and snappy, data pages v1 and v2,
/// several pages a chunk, f32 and f64; a chunk whose values compress into
/// snappy's copies is left to the page reader.
#[test]
fn plain_values_are_read_where_they_lie() {
    use parquet::basic::Compression;
    use parquet::file::properties::WriterVersion;
    let dir = tempfile::tempdir().unwrap();
    let n = 50_000usize;
    let ids = Arc::new(arrow_array::Int64Array::from_iter_values(0..n as i64)) as ArrayRef;
    // Values drawn at random, as features are: they do not compress.
    let draw = |i: usize| crate::splitmix::SplitMix64::nth(7, i as u64);
    let f = Arc::new(arrow_array::Float32Array::from_iter_values(
        (0..n).map(|i| (draw(i) >> 40) as f32 / (1u64 << 24) as f32 - 0.5),
    )) as ArrayRef;
    let d = Arc::new(Float64Array::from_iter_values(
        (0..n).map(|i| (draw(i) >> 11) as f64 / (1u64 << 53) as f64 * 100.0),
    )) as ArrayRef;
    let same = Arc::new(arrow_array::Float32Array::from_iter_values(
        (0..n).map(|i| (i % 3) as f32),
    )) as ArrayRef;
    let fields = vec![
        arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
        arrow_schema::Field::new("f", arrow_schema::DataType::Float32, false),
        arrow_schema::Field::new("d", arrow_schema::DataType::Float64, false),
        arrow_schema::Field::new("same", arrow_schema::DataType::Float32, false),
    ];
    let all = RecordBatch::try_new(
        Arc::new(arrow_schema::Schema::new(fields)),
        vec![ids, f, d, same],
    )
    .unwrap();
    let rows = [0usize, 1, 4_999, 5_000, 17_003, 29_998, 49_999];
    for (name, codec, version) in [
        (
            "raw-v1",
            Compression::UNCOMPRESSED,
            WriterVersion::PARQUET_1_0,
        ),
        ("snappy-v1", Compression::SNAPPY, WriterVersion::PARQUET_1_0),
        ("snappy-v2", Compression::SNAPPY, WriterVersion::PARQUET_2_0),
    ] {
        let path = dir.path().join(format!("{name}.parquet"));
        let props = WriterProperties::builder()
            .set_compression(codec)
            .set_writer_version(version)
            .set_dictionary_enabled(false)
            .set_data_page_row_count_limit(5_000)
            .set_write_batch_size(5_000)
            .build();
        write_with(&path, &all, props);
        let ds =
            Dataset::open(&input(&path, "id", None, Some(&["f", "d", "same"])), false).unwrap();
        let full = ds.read_rows(0..n as u64).unwrap();
        let group = ds.parts[0].metadata.metadata().row_group(0);
        let file = Arc::new(peek::Peek::new(
            pages::PageFile::new(std::fs::File::open(&path).unwrap()).unwrap(),
        ));
        for (column, width) in [(1usize, 4usize), (2, 8), (3, 4)] {
            let leaf = pick::Leaf {
                index: column,
                width,
                optional: false,
            };
            let got = peek::peek_chunk(&file, group.column(column), n, leaf, &rows, true);
            let want: Vec<f32> = rows
                .iter()
                .map(|&r| full.features[r * 3 + column - 1])
                .collect();
            match (column, codec) {
                // Values that compress into copies: not read here.
                (3, Compression::SNAPPY) => assert_eq!(got, None, "{name} column {column}"),
                _ => assert_eq!(got, Some(want), "{name} column {column}"),
            }
        }
        // Whichever way each chunk is read, the picked rows are Arrow's.
        let at: Vec<u64> = rows.iter().map(|&r| r as u64).collect();
        let want: Vec<f32> = rows
            .iter()
            .flat_map(|&r| full.features[r * 3..r * 3 + 3].to_vec())
            .collect();
        assert_eq!(ds.read_rows_at(&at).unwrap().features, want, "{name}");
    }
}

#[test]
fn a_recycled_buffer_is_filled_again_and_keeps_nothing_of_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = two_tower_dataset(dir.path(), 3_500, 1_000);
    let fresh = dataset.read_rows(1_000..2_000).unwrap();
    // Rows done with, their features overwritten by values no read gives.
    let mut done = dataset.read_rows(0..3_500).unwrap();
    done.features.fill(f32::NAN);
    let buffer = done.features.as_ptr();
    dataset.recycle(done);
    let again = dataset.read_rows(1_000..2_000).unwrap();
    assert_eq!(
        again.features.as_ptr(),
        buffer,
        "the recycled buffer is used"
    );
    assert_eq!(again, fresh);
    // A buffer too small for the next read grows to fit it.
    dataset.recycle(dataset.read_rows(0..10).unwrap());
    assert_eq!(
        dataset.read_rows(0..3_500).unwrap().features.len(),
        3_500 * 3
    );
}
