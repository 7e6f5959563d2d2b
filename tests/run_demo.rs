//! The walking skeleton end to end: a generated two_tower job runs on local
//! workers, lands in the store as a live version, and every stored prediction
//! equals an independent computation written here.

mod common;

use std::collections::HashMap;
use std::fs::File;

use arrow_array::{Array, Float32Array, ListArray, UInt32Array, UInt64Array};
use common::{JobShape, Scratch, json, text};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use safetensors::SafeTensors;

#[test]
fn demo_job_runs_flips_and_rolls_back() {
    let s = Scratch::new(&JobShape::default());
    let job = s.job();
    let job = job.to_str().unwrap();
    // `--run` takes `herd run`'s flags (here --report).
    let out = s.herd(&["--run", job, "--report", "first.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.dir.path().join("first.json")).unwrap()).unwrap();
    assert_eq!(first["flipped"], true, "{first}");

    let versions = json(&s.herd(&["store", "versions", "--json", "--store", "store"]));
    assert_eq!(versions["live"], 1, "{versions}");
    assert_eq!(versions["versions"][0]["rows"], 600, "{versions}");
    assert_eq!(versions["versions"][0]["status"], "live", "{versions}");

    let got = json(&s.herd(&["store", "get", "7", "--json", "--store", "store"]));
    assert_eq!(got["id"], "7");
    assert_eq!(got["version"], 1);
    assert_eq!(got["model_version"], "tt-test-1");
    assert_eq!(got["ttl"], 7 * 24 * 3600);
    assert_eq!(got["stale"], false);
    assert!(got["timestamp"].as_u64().unwrap() > 1_700_000_000);
    let top = got["top_k"].as_array().unwrap();
    assert_eq!(top.len(), 10, "{got}");
    let scores: Vec<f64> = top.iter().map(|e| e["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "not sorted: {scores:?}"
    );

    let out = s.herd(&["run", job]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let versions = json(&s.herd(&["store", "versions", "--json", "--store", "store"]));
    assert_eq!(versions["live"], 2, "{versions}");

    let out = s.herd(&["store", "flip", "--to", "1", "--store", "store"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let versions = json(&s.herd(&["store", "versions", "--json", "--store", "store"]));
    assert_eq!(versions["live"], 1, "{versions}");
}

/// The model and data, read with nothing of herd's.
struct Plain {
    ids: Vec<u64>,
    histories: Vec<Vec<u32>>,
    features: Vec<Vec<f32>>,
    item_ids: Vec<u32>,
    emb: Vec<Vec<f32>>,
    layers: Vec<(Vec<Vec<f32>>, Vec<f32>)>,
}

fn tensor(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

fn read_plain(s: &Scratch, features: usize) -> Plain {
    let bytes = std::fs::read(s.path("data/two_tower.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (shape, flat) = tensor(&st, "item_embeddings");
    let dim = shape[1];
    let emb: Vec<Vec<f32>> = flat.chunks(dim).map(|c| c.to_vec()).collect();
    let ids = st.tensor("item_ids").unwrap();
    let item_ids: Vec<u32> = match ids.dtype() {
        safetensors::Dtype::I64 => ids
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect(),
        other => panic!("item_ids dtype {other:?}"),
    };
    let mut layers = Vec::new();
    for name in ["user_tower.0", "user_tower.2"] {
        let (shape, w) = tensor(&st, &format!("{name}.weight"));
        let (_, b) = tensor(&st, &format!("{name}.bias"));
        layers.push((w.chunks(shape[1]).map(|c| c.to_vec()).collect(), b));
    }

    let file = File::open(s.path("data/users.parquet")).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut p = Plain {
        ids: vec![],
        histories: vec![],
        features: vec![],
        item_ids,
        emb,
        layers,
    };
    for batch in reader {
        let batch = batch.unwrap();
        let idc = batch.column_by_name("user_id").unwrap();
        let idc = idc.as_any().downcast_ref::<UInt64Array>().unwrap();
        let hc = batch.column_by_name("history").unwrap();
        let hc = hc.as_any().downcast_ref::<ListArray>().unwrap();
        let fcs: Vec<Float32Array> = (0..features)
            .map(|i| {
                batch
                    .column_by_name(&format!("f{i}"))
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .unwrap()
                    .clone()
            })
            .collect();
        for r in 0..batch.num_rows() {
            p.ids.push(idc.value(r));
            let h = if hc.is_null(r) {
                vec![]
            } else {
                let v = hc.value(r);
                v.as_any()
                    .downcast_ref::<UInt32Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            };
            p.histories.push(h);
            p.features.push(fcs.iter().map(|c| c.value(r)).collect());
        }
    }
    p
}

/// DESIGN's two_tower, one user at a time, in f64.
fn expected_top_k(p: &Plain, row: usize, k: usize, cap: usize) -> Vec<(u32, f64)> {
    let by_id: HashMap<u32, usize> = p
        .item_ids
        .iter()
        .enumerate()
        .map(|(r, &id)| (id, r))
        .collect();
    let dim = p.emb[0].len();
    let h = &p.histories[row];
    let recent = &h[h.len().saturating_sub(cap)..];
    let mut pooled = vec![0f64; dim];
    let mut n = 0;
    for id in recent {
        if let Some(&r) = by_id.get(id) {
            for (acc, &e) in pooled.iter_mut().zip(&p.emb[r]) {
                *acc += e as f64;
            }
            n += 1;
        }
    }
    if n > 0 {
        pooled.iter_mut().for_each(|x| *x /= n as f64);
    }
    let mut x: Vec<f64> = pooled;
    x.extend(p.features[row].iter().map(|&f| f as f64));
    for (li, (w, b)) in p.layers.iter().enumerate() {
        let mut y: Vec<f64> = w
            .iter()
            .zip(b)
            .map(|(wr, &bb)| {
                wr.iter().zip(&x).map(|(&a, &c)| a as f64 * c).sum::<f64>() + bb as f64
            })
            .collect();
        if li + 1 < p.layers.len() {
            y.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        x = y;
    }
    let seen: std::collections::HashSet<u32> = h.iter().copied().collect();
    let mut scored: Vec<(u32, f64)> = p
        .item_ids
        .iter()
        .enumerate()
        .filter(|(_, id)| !seen.contains(id))
        .map(|(r, &id)| {
            (
                id,
                p.emb[r].iter().zip(&x).map(|(&e, &u)| e as f64 * u).sum(),
            )
        })
        .collect();
    scored.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

#[test]
fn every_stored_prediction_equals_an_independent_computation() {
    let shape = JobShape {
        users: 400,
        ..Default::default()
    };
    let s = Scratch::new(&shape);
    let out = s.herd(&["run", s.job().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let p = read_plain(&s, shape.features);
    assert!(
        p.histories.iter().any(|h| h.len() > shape.max_history),
        "no history over the cap"
    );
    assert!(p.histories.iter().any(|h| h.is_empty()), "no empty history");
    let store = herd::store::Store::open_existing(&s.store()).unwrap();
    let tol = 1e-4;
    for (row, &id) in p.ids.iter().enumerate() {
        let want = expected_top_k(&p, row, shape.top_k, shape.max_history);
        let got = store
            .get(&herd::model::EntityKey::Int(id), None, 0)
            .unwrap()
            .unwrap_or_else(|| panic!("user {id} has no prediction"));
        let herd::store::Value::TopK(got) = got.value else {
            panic!("user {id}: not a top-K value")
        };
        assert_eq!(got.len(), want.len(), "user {id}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.1 as f64 - w.1).abs() <= tol * w.1.abs().max(1.0),
                "user {id}: score {g:?} vs {w:?}"
            );
        }
        // Same sets, up to ties at the boundary.
        let boundary = want.last().map(|w| w.1).unwrap_or(0.0);
        let got_set: std::collections::BTreeSet<u32> = got.iter().map(|g| g.0).collect();
        for w in &want {
            if (w.1 - boundary).abs() > tol * boundary.abs().max(1.0) {
                assert!(
                    got_set.contains(&w.0),
                    "user {id}: item {} missing: {got:?} vs {want:?}",
                    w.0
                );
            }
        }
        let seen: std::collections::HashSet<u32> = p.histories[row].iter().copied().collect();
        assert!(
            got.iter().all(|g| !seen.contains(&g.0)),
            "user {id}: a seen item was recommended"
        );
    }
}

#[test]
fn killing_a_worker_mid_run_still_gives_a_complete_version() {
    let shape = JobShape {
        users: 20000,
        items: 50000,
        dim: 32,
        slots: 3,
        ..Default::default()
    };
    let s = Scratch::new(&shape);
    let report = s.path("report.json");
    let child = std::process::Command::new(common::HERD)
        .args([
            "run",
            s.job().to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ])
        .current_dir(s.dir.path())
        // Slot 0 runs 4x slower, so the run lasts long enough to kill a worker.
        .env(herd::run::TEST_SLOW_SLOT_ENV, "0:4")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let victim = common::wait_for_busy_worker(child.id(), std::time::Duration::from_secs(60));
    std::thread::sleep(std::time::Duration::from_millis(300));
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["rows"], 20000, "{r}");
    assert_eq!(r["flipped"], true, "{r}");
    assert!(
        r["hosts"][0]["failures"].as_u64().unwrap() >= 1,
        "the kill was not noticed: {r}"
    );
    // The dead worker was replaced by a fourth slot on the same host.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("restarting the worker as local#3"),
        "{stderr}"
    );
    assert_eq!(r["slots"].as_array().unwrap().len(), 4, "{r}");
    let store = herd::store::Store::open_existing(&s.store()).unwrap();
    assert_eq!(store.len(1).unwrap(), 20000);
    assert_eq!(store.live().unwrap(), Some(1));
}

#[test]
fn a_missing_model_file_exits_2_naming_the_job_and_the_file() {
    let s = Scratch::new(&JobShape::default());
    // No [generate]: nothing makes the model.
    let job = std::fs::read_to_string(s.job()).unwrap();
    s.write("job.toml", job.split("[generate]").next().unwrap());
    s.write("data/users.parquet", "not parquet");
    let out = s.herd(&["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("job.toml"), "{err}");
    assert!(err.contains("two_tower.safetensors"), "{err}");
}

#[test]
fn an_output_store_that_is_a_file_exits_2_naming_the_job_and_the_path() {
    let s = Scratch::new(&JobShape::default());
    s.write("store", "a file where the store should be");
    let out = s.herd(&["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("job.toml: [output] store = "), "{err}");
    assert!(err.contains("is a file, not a directory"), "{err}");
    assert_eq!(
        std::fs::read_to_string(s.store()).unwrap(),
        "a file where the store should be"
    );
}

#[test]
fn a_weight_shape_mismatch_exits_2_naming_the_tensor() {
    let s = Scratch::new(&JobShape::default());
    // The generated model's tower takes dim + 3 features; give it 2.
    let out = s.herd(&[
        "gen",
        "two-tower",
        "--out",
        "data",
        "--users",
        "100",
        "--items",
        "500",
        "--dim",
        "16",
        "--features",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let job = std::fs::read_to_string(s.job()).unwrap();
    s.write(
        "job.toml",
        &job.replace(
            "feature_columns = [\"f0\", \"f1\", \"f2\"]",
            "feature_columns = [\"f0\", \"f1\"]",
        ),
    );
    let out = s.herd(&["run", "job.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("job.toml"), "{err}");
    assert!(err.contains("user_tower.0"), "{err}");
    assert!(err.contains("2 feature column"), "{err}");
}

#[test]
fn a_demo_run_writes_a_trace_with_one_track_per_slot_and_one_event_per_attempt() {
    // Enough rows that every slot's worker has loaded before the others
    // have scored them all (a slot that ran nothing has no track).
    let s = Scratch::new(&JobShape {
        slots: 3,
        users: 6_000,
        ..Default::default()
    });
    let out = s.herd(&[
        "run",
        "job.toml",
        "--trace",
        "trace.json",
        "--report",
        "report.json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("report.json")).unwrap()).unwrap();
    let trace: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("trace.json")).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    let complete: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(
        complete.len() as u64,
        report["attempts"].as_u64().unwrap(),
        "one X event per attempt"
    );
    let tracks: std::collections::BTreeSet<(u64, u64)> = complete
        .iter()
        .map(|e| (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()))
        .collect();
    assert!(tracks.len() <= 3 && !tracks.is_empty(), "{tracks:?}");
    let named: std::collections::BTreeSet<(u64, u64)> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()))
        .collect();
    assert_eq!(named.len(), 3, "one named track per slot: {named:?}");
    assert!(tracks.is_subset(&named), "{tracks:?} vs {named:?}");
    for e in &complete {
        assert!(
            e["ts"].as_f64().unwrap() >= 0.0 && e["dur"].as_f64().unwrap() >= 0.0,
            "{e}"
        );
    }
}
