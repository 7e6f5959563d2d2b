//! The same job on the native CPU path and on the WGSL shaders (through wgpu
//! on a software adapter here; on a GPU elsewhere) stores the same
//! predictions, within the kernels' tolerance.

mod common;

use common::{JobShape, Scratch, text};
use herd::model::EntityKey;
use herd::store::{Store, Value};

fn run_on(device: &str, shape: &JobShape) -> (Scratch, serde_json::Value) {
    let s = Scratch::new(shape);
    s.write(
        "hosts.toml",
        &format!(
            "[[host]]\nname = \"local\"\nkind = \"local\"\nslots = 2\ndevice = \"{device}\"\n"
        ),
    );
    let out = s.herd(&["run", "job.toml", "--report", "report.json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "device {device}: {}\n(wgpu-cpu needs a software Vulkan driver: apt-get install -y mesa-vulkan-drivers libvulkan1)",
        text(&out)
    );
    let report = serde_json::from_slice(&std::fs::read(s.path("report.json")).unwrap()).unwrap();
    (s, report)
}

#[test]
fn a_wgpu_cpu_run_stores_what_a_cpu_run_stores() {
    let shape = JobShape {
        users: 300,
        items: 2000,
        dim: 16,
        top_k: 10,
        ..Default::default()
    };
    let report = assert_same_predictions("wgpu-cpu", &shape);
    assert!(
        report["hosts"][0]["adapter"]
            .as_str()
            .unwrap()
            .contains("llvmpipe"),
        "{report}"
    );
}

/// The demo job's shape and data (jobs/demo.toml: 5,000 users, 20,000
/// items, dim 32, top 20, its generator seed) with `device = "auto"` on a
/// machine with a real GPU: auto must pick the GPU, and the GPU must store
/// what the native CPU path stores.
#[test]
#[ignore = "needs a real GPU; scripts/gpu-check.sh runs it on one"]
fn the_demo_job_on_a_real_gpu_stores_what_the_cpu_stores() {
    let shape = JobShape {
        users: 5000,
        items: 20_000,
        dim: 32,
        features: 4,
        top_k: 20,
        max_history: 200,
        slots: 2,
        seed: 7,
    };
    let report = assert_same_predictions("auto", &shape);
    let adapter = report["hosts"][0]["adapter"].as_str().unwrap();
    assert!(
        !adapter.contains("llvmpipe") && !adapter.starts_with("native"),
        "device = auto did not pick a real GPU: {report}"
    );
    eprintln!("demo job on '{adapter}' stored what the CPU path stored");
}

/// Runs `shape` on `device` and on the native CPU path and checks that both
/// stores hold the same predictions (scores within 1e-4, the same items up
/// to ties at the boundary); returns the `device` run's report.
fn assert_same_predictions(device: &str, shape: &JobShape) -> serde_json::Value {
    let (cpu, cpu_report) = run_on("cpu", shape);
    let (gpu, gpu_report) = run_on(device, shape);
    assert_eq!(cpu_report["hosts"][0]["backend"], "cpu", "{cpu_report}");
    let backend = gpu_report["hosts"][0]["backend"].as_str().unwrap();
    assert!(backend.starts_with("wgpu-"), "{gpu_report}");
    assert!(
        !gpu_report["hosts"][0]["adapter"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{gpu_report}"
    );

    let a = Store::open_existing(&cpu.store()).unwrap();
    let b = Store::open_existing(&gpu.store()).unwrap();
    let tol = 1e-4f32;
    let mut compared = 0;
    let mut largest = 0.0f32;
    for id in 0..shape.users {
        let key = EntityKey::Int(id);
        let x = a.get(&key, None, 0).unwrap().expect("cpu prediction");
        let y = b.get(&key, None, 0).unwrap().expect("wgpu prediction");
        let (Value::TopK(x), Value::TopK(y)) = (&x.value, &y.value) else {
            panic!("user {id}: not top-K values")
        };
        assert_eq!(x.len(), y.len(), "user {id}: {x:?} vs {y:?}");
        for (p, q) in x.iter().zip(y) {
            largest = largest.max((p.1 - q.1).abs() / p.1.abs().max(1.0));
            assert!(
                (p.1 - q.1).abs() <= tol * p.1.abs().max(1.0),
                "user {id}: scores differ: {x:?} vs {y:?}"
            );
        }
        // Same items, up to ties at the boundary score.
        let boundary = x.last().map(|p| p.1).unwrap_or(0.0);
        for p in x {
            if (p.1 - boundary).abs() > tol * boundary.abs().max(1.0) {
                assert!(
                    y.iter().any(|q| q.0 == p.0),
                    "user {id}: item {} missing on wgpu: {x:?} vs {y:?}",
                    p.0
                );
            }
        }
        compared += 1;
    }
    assert_eq!(compared, shape.users);
    eprintln!(
        "{compared} entities compared on {device}: largest score difference {largest:e} \
         (relative above 1)"
    );
    gpu_report
}
