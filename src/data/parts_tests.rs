//! Inputs of many part files: folders, globs, codecs, `key=value` folders,
//! and the errors that name a part.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::r#gen::{GenKind, GenOptions, generate};
use super::*;
use crate::config::{Input, Location};

/// Every codec the Parquet format defines that writers use today.
fn codecs() -> [Compression; 7] {
    [
        Compression::UNCOMPRESSED,
        Compression::SNAPPY,
        Compression::GZIP(GzipLevel::default()),
        Compression::LZ4,
        Compression::LZ4_RAW,
        Compression::ZSTD(ZstdLevel::default()),
        Compression::BROTLI(BrotliLevel::default()),
    ]
}

fn input(path: &Path, id: &str, history: Option<&str>, features: Option<&[&str]>) -> Input {
    Input {
        path: Location::Local(path.to_path_buf()),
        read: crate::config::ReadMode::Auto,
        storage: Default::default(),
        id_column: id.to_string(),
        history_column: history.map(str::to_string),
        feature_columns: features.map(|f| f.iter().map(|s| s.to_string()).collect()),
        on_invalid: crate::config::OnInvalid::Error,
    }
}

/// A generated two-tower file of `users` rows, and all its rows as one batch.
fn generated(dir: &Path, users: u64) -> (PathBuf, RecordBatch) {
    let opts = GenOptions {
        users,
        items: 2_000,
        dim: 8,
        features: 3,
        hidden: 16,
        row_group_rows: 300,
        ..GenOptions::defaults(GenKind::TwoTower)
    };
    let data = dir.join("one.parquet");
    generate(&opts, &data, &dir.join("model.safetensors")).unwrap();
    let file = std::fs::File::open(&data).unwrap();
    let mut batches = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .with_batch_size(users as usize)
        .build()
        .unwrap();
    let all = batches.next().unwrap().unwrap();
    assert_eq!(all.num_rows() as u64, users);
    (data, all)
}

/// Writes `batch` to `path` with `codec`, in row groups of `group` rows.
fn write(path: &Path, batch: &RecordBatch, codec: Compression, group: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let props = WriterProperties::builder()
        .set_compression(codec)
        .set_max_row_group_row_count(Some(group))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

fn codec_of(path: &Path) -> Compression {
    let file = std::fs::File::open(path).unwrap();
    let meta = ArrowReaderMetadata::load(&file, Default::default()).unwrap();
    meta.metadata().row_group(0).column(0).compression()
}

#[test]
fn a_folder_of_parts_in_every_codec_reads_as_the_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let (one, all) = generated(dir.path(), 2_000);
    // Part sizes that do not follow the row groups of the single file.
    let cuts = [0, 170, 640, 641, 1_100, 1_500, 1_777, 2_000];
    let folder = dir.path().join("users");
    for (i, codec) in codecs().iter().enumerate() {
        let path = folder.join(format!("part-{i:02}.parquet"));
        let rows = all.slice(cuts[i], cuts[i + 1] - cuts[i]);
        write(&path, &rows, *codec, 128);
        assert_eq!(codec_of(&path), *codec, "{}", path.display());
    }
    // What Spark and friends leave beside the parts is not read.
    std::fs::write(folder.join("_SUCCESS"), b"").unwrap();
    std::fs::write(folder.join(".part-00.parquet.crc"), b"crc").unwrap();
    std::fs::create_dir_all(folder.join("_temporary")).unwrap();
    std::fs::write(folder.join("_temporary/part-99.parquet"), b"junk").unwrap();

    let single = Dataset::open(&input(&one, "user_id", Some("history"), None), true).unwrap();
    let parts = Dataset::open(&input(&folder, "user_id", Some("history"), None), true).unwrap();
    assert_eq!(parts.num_parts(), codecs().len());
    assert_eq!(parts.num_rows(), 2_000);
    assert_eq!(parts.feature_names(), single.feature_names());
    let names: Vec<&Path> = parts.part_names().collect();
    assert_eq!(names[0], folder.join("part-00.parquet"));
    assert_eq!(names[6], folder.join("part-06.parquet"));
    // Row groups never span two parts.
    let starts = parts.row_group_starts();
    for cut in cuts {
        assert!(starts.contains(&(cut as u64)), "{cut} not in {starts:?}");
    }

    let full = single.read_rows(0..2_000).unwrap();
    assert_eq!(parts.read_rows(0..2_000).unwrap(), full);
    assert_eq!(parts.scan_index().unwrap(), single.scan_index().unwrap());
    for (start, end) in [
        (0, 1),
        (169, 171),
        (639, 643),
        (100, 1_900),
        (1_499, 1_501),
        (1_999, 2_000),
        (700, 700),
    ] {
        assert_eq!(
            parts.read_rows(start..end).unwrap(),
            full.slice(start as usize..end as usize),
            "rows {start}..{end}"
        );
    }
    let e = parts.read_rows(1_990..2_001).unwrap_err();
    assert!(e.to_string().contains(&folder.display().to_string()), "{e}");
}

#[test]
fn key_value_folders_become_columns_and_a_glob_picks_parts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("events");
    let batch = |ids: std::ops::Range<i64>| {
        let f: Vec<f32> = ids.clone().map(|i| i as f32 / 10.0).collect();
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(ids)) as ArrayRef,
            ),
            ("f", Arc::new(Float32Array::from(f)) as ArrayRef),
        ])
        .unwrap()
    };
    let layout = [
        ("region=3/day=2024-01-01/a.parquet", 0..4),
        ("region=3/day=2024-01-02/a.parquet", 4..6),
        ("region=12/day=2024-01-01/a.parquet", 6..9),
        ("region=12/day=2024-01-02/b.parquet", 9..10),
    ];
    for (rel, ids) in &layout {
        write(
            &root.join(rel),
            &batch(ids.clone()),
            Compression::SNAPPY,
            100,
        );
    }

    // Default features: the file's columns only.
    let all = Dataset::open(&input(&root, "id", None, None), false).unwrap();
    assert_eq!(all.feature_names(), ["f"]);
    // Sorted by path: region=12 comes before region=3.
    let rows = all.read_rows(0..10).unwrap();
    assert_eq!(rows.ids, EntityIds::Int(vec![6, 7, 8, 9, 0, 1, 2, 3, 4, 5]));

    // A folder column named as a feature: the folder's integer, per row.
    let named = Dataset::open(&input(&root, "id", None, Some(&["region", "f"])), false).unwrap();
    let rows = named.read_rows(2..6).unwrap();
    assert_eq!(rows.ids, EntityIds::Int(vec![8, 9, 0, 1]));
    assert_eq!(rows.features, [12.0, 0.8, 12.0, 0.9, 3.0, 0.0, 3.0, 0.1]);

    // A folder of dates is a string column: not a feature.
    let e = Dataset::open(&input(&root, "id", None, Some(&["day"])), false).unwrap_err();
    assert!(
        matches!(&e, Error::ColumnType { column, .. } if column == "day"),
        "{e}"
    );
    // An unknown column lists the folder columns too.
    let e = Dataset::open(&input(&root, "id", None, Some(&["nope"])), false).unwrap_err();
    assert!(e.to_string().contains("'region', 'day'"), "{e}");

    // A glob: one file per region on the first day, in path order.
    let glob = root.join("region=*/day=2024-01-01/*.parquet");
    let picked = Dataset::open(&input(&glob, "id", None, Some(&["region", "f"])), false).unwrap();
    assert_eq!(picked.num_parts(), 2);
    assert_eq!(
        picked.read_rows(0..7).unwrap().ids,
        EntityIds::Int(vec![6, 7, 8, 0, 1, 2, 3])
    );
    let e = Dataset::open(
        &input(&root.join("*/x=*/*.parquet"), "id", None, None),
        false,
    )
    .unwrap_err();
    assert!(matches!(e, Error::NoParts { .. }), "{e}");

    // A null folder value is a null feature, named with its part file.
    write(
        &root.join("region=__HIVE_DEFAULT_PARTITION__/day=2024-01-03/c.parquet"),
        &batch(10..12),
        Compression::SNAPPY,
        100,
    );
    let with_null =
        Dataset::open(&input(&root, "id", None, Some(&["region", "f"])), false).unwrap();
    let e = with_null.read_rows(0..12).unwrap_err();
    assert!(
        matches!(&e, Error::NullFeature { column, row: 0, .. } if column == "region"),
        "{e}"
    );
    assert!(
        e.to_string().contains("region=__HIVE_DEFAULT_PARTITION__"),
        "{e}"
    );
}

#[test]
fn parts_that_differ_name_both_files_and_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let ids = || Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef;
    let floats = || Arc::new(Float32Array::from(vec![0.5, 1.5])) as ArrayRef;
    let ints = || Arc::new(Int64Array::from(vec![5, 6])) as ArrayRef;
    let write_batch = |name: &str, columns: Vec<(&str, ArrayRef)>| {
        let b = RecordBatch::try_from_iter(columns).unwrap();
        write(&root.join(name), &b, Compression::SNAPPY, 10);
    };
    write_batch("a.parquet", vec![("id", ids()), ("f", floats())]);
    write_batch("b.parquet", vec![("id", ids()), ("f", ints())]);
    let open = || Dataset::open(&input(&root, "id", None, None), false).unwrap_err();
    let e = open();
    let text = e.to_string();
    assert!(
        matches!(&e, Error::SchemaMismatch { column, .. } if column == "f"),
        "{text}"
    );
    for want in ["b.parquet", "a.parquet", "'f'", "Int64", "Float32"] {
        assert!(text.contains(want), "'{text}' lacks {want}");
    }

    write_batch("b.parquet", vec![("id", ids())]);
    let text = open().to_string();
    assert!(
        text.contains("column 'f' is missing here but is in"),
        "{text}"
    );

    write_batch(
        "b.parquet",
        vec![("id", ids()), ("f", floats()), ("g", floats())],
    );
    let text = open().to_string();
    assert!(text.contains("column 'g' is here but not in"), "{text}");

    // The same columns in another order are the same schema.
    write_batch("b.parquet", vec![("f", floats()), ("id", ids())]);
    let ok = Dataset::open(&input(&root, "id", None, None), false).unwrap();
    assert_eq!(ok.read_rows(0..4).unwrap().features, [0.5, 1.5, 0.5, 1.5]);

    // Folder columns must match too.
    write_batch("k=1/c.parquet", vec![("id", ids()), ("f", floats())]);
    let text = open().to_string();
    assert!(
        text.contains("its key=value folders are 'k' but those of") && text.contains("(none)"),
        "{text}"
    );
}

#[test]
fn arrow_layouts_of_one_stored_type_are_the_same_schema_across_parts() {
    use arrow_array::types::{Int32Type, Int64Type};
    use arrow_array::{DictionaryArray, LargeListArray, LargeStringArray, ListArray, StringArray};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let names = |r: std::ops::Range<usize>| r.map(|i| format!("u{i}")).collect::<Vec<_>>();
    let lists = |r: std::ops::Range<usize>| {
        r.map(|i| {
            Some(
                (0..i % 4)
                    .map(|k| Some((i * 10 + k) as i64))
                    .collect::<Vec<_>>(),
            )
        })
        .collect::<Vec<_>>()
    };
    let floats = |r: std::ops::Range<usize>| {
        Arc::new(Float32Array::from_iter_values(r.map(|i| i as f32 / 8.0))) as ArrayRef
    };
    let part = |name: &str, r: std::ops::Range<usize>, layout: usize| {
        let ids = names(r.clone());
        let id: ArrayRef = match layout {
            // pandas' Categorical, and a large string column (Polars).
            1 => Arc::new(
                ids.iter()
                    .map(String::as_str)
                    .collect::<DictionaryArray<Int32Type>>(),
            ),
            2 => Arc::new(LargeStringArray::from_iter_values(&ids)),
            _ => Arc::new(StringArray::from_iter_values(&ids)),
        };
        let history: ArrayRef = match layout {
            1 => Arc::new(LargeListArray::from_iter_primitive::<Int64Type, _, _>(
                lists(r.clone()),
            )),
            _ => Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(lists(
                r.clone(),
            ))),
        };
        let b = RecordBatch::try_from_iter([("id", id), ("h", history), ("f", floats(r))]).unwrap();
        write(&root.join(name), &b, Compression::SNAPPY, 7);
    };
    part("a.parquet", 0..20, 0);
    part("b.parquet", 20..45, 1);
    part("c.parquet", 45..60, 2);
    part("../one.parquet", 0..60, 0);
    let open = |path: &Path| Dataset::open(&input(path, "id", Some("h"), Some(&["f"])), true);
    let parts = open(&root).unwrap();
    let single = open(&dir.path().join("one.parquet")).unwrap();
    let full = single.read_rows(0..60).unwrap();
    assert_eq!(parts.read_rows(0..60).unwrap(), full);
    assert_eq!(parts.scan_index().unwrap(), single.scan_index().unwrap());
    let at = [3, 19, 20, 33, 44, 45, 59];
    assert_eq!(
        parts.read_rows_at(&at).unwrap(),
        single.read_rows_at(&at).unwrap()
    );

    // A stored type that differs still does: integer ids beside strings.
    let b = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![7])) as ArrayRef),
        (
            "h",
            Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(lists(
                0..1,
            ))) as ArrayRef,
        ),
        ("f", floats(0..1)),
    ])
    .unwrap();
    write(&root.join("d.parquet"), &b, Compression::SNAPPY, 7);
    let e = open(&root).unwrap_err();
    assert!(
        matches!(&e, Error::SchemaMismatch { column, .. } if column == "id"),
        "{e}"
    );
}

#[test]
fn a_value_error_names_the_part_file_and_its_own_row() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let b = |ids: Vec<Option<i64>>| {
        let n = ids.len();
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("f", Arc::new(Float32Array::from(vec![1.0; n])) as ArrayRef),
        ])
        .unwrap()
    };
    write(
        &root.join("a.parquet"),
        &b(vec![Some(1), Some(2), Some(3)]),
        Compression::ZSTD(ZstdLevel::default()),
        10,
    );
    write(
        &root.join("b.parquet"),
        &b(vec![Some(4), Some(5), None]),
        Compression::GZIP(GzipLevel::default()),
        10,
    );
    let ds = Dataset::open(&input(&root, "id", None, None), false).unwrap();
    let e = ds.scan_index().unwrap_err();
    assert!(matches!(&e, Error::NullId { row: 2, .. }), "{e}");
    assert!(e.to_string().contains("b.parquet"), "{e}");
    let e = ds.read_rows(1..6).unwrap_err();
    assert!(matches!(&e, Error::NullId { row: 2, .. }), "{e}");
    assert_eq!(
        ds.read_rows(1..5).unwrap().ids,
        EntityIds::Int(vec![2, 3, 4, 5])
    );
}

#[test]
fn under_on_invalid_error_a_read_refuses_the_first_invalid_row_naming_part_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let b = |ids: Vec<i64>, f: Vec<f32>, g: Vec<f32>| {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("f", Arc::new(Float32Array::from(f)) as ArrayRef),
            ("g", Arc::new(Float32Array::from(g)) as ArrayRef),
        ])
        .unwrap()
    };
    let codec = Compression::SNAPPY;
    write(
        &root.join("a.parquet"),
        &b(vec![1, 2, 3], vec![1.0; 3], vec![2.0; 3]),
        codec,
        10,
    );
    // Column f holds an infinity further down than column g's NaN: the row
    // comes first, then the column.
    let (f, g) = (
        vec![1.0, 1.0, 1.0, f32::INFINITY, 1.0],
        vec![2.0, 2.0, f32::NAN, 2.0, 2.0],
    );
    write(
        &root.join("b.parquet"),
        &b(vec![4, 5, 6, 7, 8], f, g),
        codec,
        10,
    );
    let mut settings = input(&root, "id", None, None);
    let ds = Dataset::open(&settings, false).unwrap();
    let refused = |e: &Error| {
        let (path, column, row, what) = e.invalid_feature().expect("an invalid feature");
        assert!(path.ends_with("b.parquet"), "{e}");
        assert_eq!((column, row, what.as_str()), ("g", 2, "NaN"), "{e}");
        assert!(
            e.to_string()
                .contains("b.parquet: column 'g', row 2: the feature is NaN"),
            "{e}"
        );
    };
    refused(&ds.read_rows(0..8).unwrap_err());
    refused(&ds.read_rows_at(&[0, 5]).unwrap_err());
    let ids = ds.scan_index().unwrap().ids;
    let mut pieces = 0;
    let streamed = ds.stream_segments(&ds.segments(0..8, &ids), 2, |_| {
        pieces += 1;
        true
    });
    refused(&streamed.unwrap_err());
    // Pieces never span parts: a's two, then b's rows 0..2; b's 2..4 refused.
    assert_eq!(
        pieces, 3,
        "the pieces before the refused one are handed out"
    );
    // The rows before it read, in one piece or many.
    assert_eq!(ds.read_rows(0..5).unwrap().len(), 5);
    // With on_invalid = "skip" the values are read as they are (the run
    // found those rows first).
    settings.on_invalid = crate::config::OnInvalid::Skip;
    let skip = Dataset::open(&settings, false).unwrap();
    let rows = skip.read_rows(0..8).unwrap();
    assert!(rows.features[5 * 2 + 1].is_nan() && rows.features[6 * 2].is_infinite());
}

#[test]
fn an_empty_folder_and_a_missing_path_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("_temporary")).unwrap();
    std::fs::write(empty.join("notes.txt"), b"x").unwrap();
    let e = Dataset::open(&input(&empty, "id", None, None), false).unwrap_err();
    assert!(matches!(e, Error::NoParts { .. }), "{e}");
    assert!(e.to_string().contains("no *.parquet file"), "{e}");
    let missing = dir.path().join("nope/users.parquet");
    let e = Dataset::open(&input(&missing, "id", None, None), false).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("nope/users.parquet"), "{e}");
}
