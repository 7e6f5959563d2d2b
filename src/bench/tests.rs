use super::*;
use crate::data::{GenKind, GenOptions, generate};

/// A baseline result as bench/baseline.py writes it, for `data`/`weights`.
fn baseline_json(model: &str, data: &Path, weights: &Path, rows: usize) -> serde_json::Value {
    serde_json::json!({
        "model": model, "engine": "onnxruntime", "engine_version": "1.32.0",
        "threads": 2, "rows": rows, "data": data, "weights": weights,
        "top_k": 10, "max_history": 50, "exclude_seen": true,
        "read_s": 0.1, "build_s": 0.1, "compute_s": 0.5, "write_s": 0.1, "total_s": 1.0,
        "repeat": 2,
    })
}

#[test]
fn compute_on_files_times_herd_on_the_files_each_baseline_scored() {
    let dir = tempfile::tempdir().unwrap();
    let mut mlp = GenOptions::defaults(GenKind::Mlp);
    mlp.users = 300;
    let mut tt = GenOptions::defaults(GenKind::TwoTower);
    (tt.users, tt.items, tt.dim) = (200, 500, 16);
    let (md, mw) = (
        dir.path().join("entities.parquet"),
        dir.path().join("mlp.safetensors"),
    );
    let (td, tw) = (
        dir.path().join("users.parquet"),
        dir.path().join("tt.safetensors"),
    );
    generate(&mlp, &md, &mw).unwrap();
    generate(&tt, &td, &tw).unwrap();
    let file = dir.path().join("baselines.json");
    let list = serde_json::json!([
        baseline_json("mlp", &md, &mw, 300),
        baseline_json("two_tower", &td, &tw, 200)
    ]);
    std::fs::write(&file, list.to_string()).unwrap();

    let rows = compute_on_files(&read_baselines(&file).unwrap()).unwrap();
    let cpu: Vec<_> = rows.iter().filter(|r| r.backend == "cpu").collect();
    assert_eq!(cpu.len(), 3);
    assert_eq!((cpu[0].model.as_str(), cpu[0].rows), ("mlp", 300));
    // The same network from its ONNX export, beside it.
    assert_eq!((cpu[1].model.as_str(), cpu[1].rows), (MLP_ONNX, 300));
    assert_eq!((cpu[2].model.as_str(), cpu[2].rows), ("two_tower", 200));
    for r in &cpu {
        assert_eq!(
            r.adapter,
            format!("native {}, 2 threads", crate::model::simd_level().name())
        );
        assert!(r.seconds > 0.0 && r.rows_per_s > 0.0);
        // The baseline's speed is its rows over its compute time.
        let base = r.rows as f64 / 0.5;
        assert!((r.baseline_rows_per_s - base).abs() < 1e-9);
        assert!((r.ratio - r.rows_per_s / base).abs() < 1e-9 * r.ratio.max(1.0));
        assert_eq!(
            r.baseline,
            "onnxruntime 1.32.0, 2 threads, same files, best of 2"
        );
    }
    let text = table(&rows);
    assert!(text.contains("same files, best of 2"), "{text}");
    assert!(
        text.contains("mlp.onnx (the mlp exported to ONNX) on cpu: "),
        "{text}"
    );

    // One object instead of a list is read too.
    std::fs::write(&file, baseline_json("mlp", &md, &mw, 300).to_string()).unwrap();
    assert_eq!(read_baselines(&file).unwrap().len(), 1);
}

#[test]
fn compute_on_files_refuses_a_baseline_of_other_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut mlp = GenOptions::defaults(GenKind::Mlp);
    mlp.users = 100;
    let (md, mw) = (
        dir.path().join("entities.parquet"),
        dir.path().join("mlp.safetensors"),
    );
    generate(&mlp, &md, &mw).unwrap();
    let file = dir.path().join("b.json");
    std::fs::write(&file, baseline_json("mlp", &md, &mw, 999).to_string()).unwrap();
    let e = compute_on_files(&read_baselines(&file).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("entities.parquet has 100 rows but the baseline scored 999")
            && e.contains("rerun bench/baseline.py"),
        "{e}"
    );

    std::fs::write(&file, baseline_json("forest", &md, &mw, 100).to_string()).unwrap();
    let e = compute_on_files(&read_baselines(&file).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("'forest' is not mlp, two_tower or gbdt"), "{e}");

    // A gbdt baseline whose model file is not ONNX is refused naming it.
    std::fs::write(&file, baseline_json("gbdt", &md, &mw, 100).to_string()).unwrap();
    let e = format!(
        "{:#}",
        compute_on_files(&read_baselines(&file).unwrap()).unwrap_err()
    );
    assert!(
        e.contains("mlp.safetensors") && e.contains("not a valid ONNX model"),
        "{e}"
    );

    std::fs::write(&file, "not json").unwrap();
    let e = format!("{:#}", read_baselines(&file).unwrap_err());
    assert!(e.contains("b.json is not JSON"), "{e}");
    std::fs::write(&file, "[{\"model\": \"mlp\"}]").unwrap();
    let e = format!("{:#}", read_baselines(&file).unwrap_err());
    assert!(
        e.contains("entry 0 is not a bench/baseline.py result"),
        "{e}"
    );
}
