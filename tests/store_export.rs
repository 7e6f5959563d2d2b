//! `herd store export`: Parquet files read back with the parquet crate equal
//! the store's values, JSON Lines equal `herd store get --json`, and bad
//! requests fail leaving no file behind.

mod store_common;

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use herd::model::{EntityIds, Predictions};
use herd::store::{Status, Store};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use store_common::{T0, new_version, top_k};

const HERD: &str = env!("CARGO_BIN_EXE_herd");

fn herd(args: &[&str], store: &Path) -> std::process::Output {
    Command::new(HERD)
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap()
}

/// `herd store export` of `version` (else the live one) in `format` to `out`.
fn export(store: &Path, version: Option<&str>, format: &str, out: &Path) -> std::process::Output {
    let mut args = vec![
        "store",
        "export",
        "--format",
        format,
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(v) = version {
        args.extend(["--version", v]);
    }
    herd(&args, store)
}

fn read_parquet(path: &Path) -> (Arc<arrow_schema::Schema>, Vec<RecordBatch>) {
    let file = std::fs::File::open(path).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = builder.schema().clone();
    let batches = builder.build().unwrap().map(|b| b.unwrap()).collect();
    (schema, batches)
}

/// v1: 20,000 integer ids in chunks of 5,000 with top-3 lists that depend on
/// the id; validated and live.
fn top_k_store(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("store");
    let store = Store::open(&path).unwrap();
    let v = new_version(&store, "export", 20_000);
    for start in (0..20_000u64).step_by(5_000) {
        let ids: Vec<u64> = (start..start + 5_000).collect();
        let mut offsets = vec![0u32];
        let (mut items, mut scores) = (Vec::new(), Vec::new());
        for &id in &ids {
            for k in 0..3u32 {
                items.push(id as u32 + k);
                scores.push(id as f32 / (k as f32 + 1.0));
            }
            offsets.push(items.len() as u32);
        }
        let preds = Predictions::TopK {
            offsets,
            items,
            scores,
        };
        assert!(
            store
                .commit_chunk(v, start..start + 5_000, &EntityIds::Int(ids), &preds, T0)
                .unwrap()
        );
    }
    store
        .update_record(v, |r| r.status = Status::Validated)
        .unwrap();
    store.flip(v).unwrap();
    path
}

#[test]
fn parquet_export_holds_every_prediction_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let store = top_k_store(dir.path());
    let out = dir.path().join("v1.parquet");
    let run = export(&store, None, "parquet", &out);
    assert!(run.status.success(), "{run:?}");
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(said.contains("exported 20000 predictions of v1"), "{said}");
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("v1.parquet."))
        .collect();
    assert!(beside.is_empty(), "left beside the export: {beside:?}");

    let (schema, batches) = read_parquet(&out);
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "version",
            "model_version",
            "timestamp",
            "ttl",
            "top_k"
        ]
    );
    assert_eq!(schema.field(0).data_type(), &DataType::UInt64);
    let DataType::List(item) = schema.field(5).data_type() else {
        panic!("top_k is a list: {schema:?}")
    };
    let DataType::Struct(pair) = item.data_type() else {
        panic!("top_k holds structs")
    };
    assert_eq!(pair[0].name(), "item");
    assert_eq!(pair[0].data_type(), &DataType::UInt32);
    assert_eq!(pair[1].name(), "score");
    assert_eq!(pair[1].data_type(), &DataType::Float32);

    let mut expected_id = 0u64;
    for b in &batches {
        let ids = b.column(0).as_primitive::<UInt64Type>();
        let versions = b.column(1).as_primitive::<UInt64Type>();
        let models = b.column(2).as_string::<i32>();
        let ts = b.column(3).as_primitive::<UInt64Type>();
        let ttl = b.column(4).as_primitive::<UInt64Type>();
        let lists = b.column(5).as_list::<i32>();
        for r in 0..b.num_rows() {
            let id = ids.value(r);
            assert_eq!(id, expected_id, "ids in key order, none missing");
            expected_id += 1;
            assert_eq!(versions.value(r), 1);
            assert_eq!(models.value(r), "export-model");
            assert_eq!(ts.value(r), T0);
            assert_eq!(ttl.value(r), 604_800);
            let pairs = lists.value(r);
            let pairs = pairs.as_struct();
            assert_eq!(pairs.len(), 3);
            let items = pairs.column(0).as_primitive::<UInt32Type>();
            let scores = pairs.column(1).as_primitive::<Float32Type>();
            for k in 0..3 {
                assert_eq!(items.value(k), id as u32 + k as u32);
                assert_eq!(scores.value(k), id as f32 / (k as f32 + 1.0));
            }
        }
    }
    assert_eq!(expected_id, 20_000);
}

#[test]
fn jsonl_export_is_store_get_json_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = top_k_store(dir.path());
    let out = dir.path().join("v1.jsonl");
    let run = export(&store, Some("1"), "jsonl", &out);
    assert!(run.status.success(), "{run:?}");
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20_000);
    for id in [0usize, 1, 4_999, 5_000, 19_999] {
        let get = herd(&["store", "get", &id.to_string(), "--json"], &store);
        assert_eq!(
            lines[id],
            String::from_utf8_lossy(&get.stdout).trim_end(),
            "line of id {id}"
        );
    }
    // To standard output.
    let run = export(&store, None, "jsonl", Path::new("-"));
    assert!(run.status.success());
    assert_eq!(String::from_utf8(run.stdout).unwrap(), text);
}

#[test]
fn string_ids_and_scores_export_as_strings_and_float_lists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).unwrap();
    let v = new_version(&store, "s", 3);
    // "abcdefgh" is 8 bytes: only the recorded id kind says it is a string.
    let ids = EntityIds::Str(vec!["abcdefgh".into(), "b".into(), "ü".into()]);
    let preds = Predictions::Scores {
        width: 2,
        values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    };
    assert!(store.commit_chunk(v, 0..3, &ids, &preds, T0).unwrap());
    store
        .update_record(v, |r| r.status = Status::Validated)
        .unwrap();
    let out = dir.path().join("s.parquet");
    let run = export(&path, Some("1"), "parquet", &out);
    assert!(run.status.success(), "{run:?}");
    let (schema, batches) = read_parquet(&out);
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
    assert_eq!(schema.field(5).name(), "scores");
    let b = &batches[0];
    let ids = b.column(0).as_string::<i32>();
    let got: Vec<&str> = (0..3).map(|i| ids.value(i)).collect();
    assert_eq!(got, ["abcdefgh", "b", "ü"]);
    let scores = b.column(5).as_list::<i32>();
    let first = scores.value(0);
    assert_eq!(first.as_primitive::<Float32Type>().values(), &[1.0, 2.0]);
}

/// `DIR/store` with version 1 of two top-K predictions, building (not live).
fn building_store(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("store");
    let store = Store::open(&path).unwrap();
    let v = new_version(&store, "n", 2);
    let (ids, preds) = top_k(0..2, &[(1, 0.5)]);
    assert!(store.commit_chunk(v, 0..2, &ids, &preds, T0).unwrap());
    path
}

#[test]
fn no_live_version_or_a_bad_version_is_an_error_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = building_store(dir.path());
    let out = dir.path().join("x.parquet");
    let run = export(&path, None, "parquet", &out);
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("no live version") && err.contains("--version"),
        "{err}"
    );
    let run = export(&path, Some("9"), "jsonl", &out);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("no version 9"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('x'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // An unwritable destination names the file.
    let run = export(
        &path,
        Some("1"),
        "jsonl",
        Path::new("/nonexistent-dir/out.jsonl"),
    );
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("/nonexistent-dir/out.jsonl.") && err.contains(".partial"),
        "{err}"
    );
}

#[test]
fn a_destination_that_is_a_symlink_device_or_pipe_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = building_store(dir.path());
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "victim data").unwrap();
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let fifo = dir.path().join("fifo.jsonl");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for out in [&link, &fifo, &Path::new("/dev/null").to_path_buf()] {
        let run = export(&path, Some("1"), "jsonl", out);
        assert_eq!(run.status.code(), Some(1), "{out:?}: {run:?}");
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains("not a regular file"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim data");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        !std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_file()
    );
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

#[test]
fn exporting_a_version_still_building_warns_that_it_is_partial() {
    let dir = tempfile::tempdir().unwrap();
    let path = building_store(dir.path());
    let out = dir.path().join("v1.jsonl");
    let run = export(&path, Some("1"), "jsonl", &out);
    assert!(run.status.success(), "{run:?}");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("warning: version 1 is still building (2 of 2 rows committed)"),
        "{err}"
    );
    let get = herd(&["store", "get", "1", "--version", "1"], &path);
    assert!(get.status.success(), "{get:?}");
    assert!(String::from_utf8_lossy(&get.stderr).contains("is still building"));
}
