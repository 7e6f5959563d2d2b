//! Every committed ONNX fixture run by the WGSL kernels (lavapipe on a
//! machine without a GPU) and compared with onnxruntime's outputs, as the
//! CPU paths are in `onnx_fixtures.rs`. No adapter at all is a failure: the
//! GPU path would go untested.

mod onnx_common;

use std::sync::OnceLock;

use herd::config::Device;
use herd::gpu::{self, Gpu, GpuOnnx};
use herd::model::onnx::{Feed, OnnxModel, Outputs};
use onnx_common::*;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        gpu::choose(Device::WgpuCpu)
            .ok()
            .flatten()
            .or_else(|| gpu::choose(Device::Gpu).ok().flatten())
            .expect(
                "no wgpu adapter found, so the ONNX kernels cannot be tested; install a \
                 software Vulkan adapter with `apt-get install -y mesa-vulkan-drivers libvulkan1`",
            )
    })
}

#[test]
fn every_fixture_on_the_wgsl_kernels_matches_onnxruntime() {
    for name in fixture_names() {
        let l = load(&name);
        let g = GpuOnnx::new(gpu(), &l.model).unwrap_or_else(|e| panic!("{name}: {e}"));
        let outs = g
            .run(gpu(), &feeds(&l, 0..l.rows), l.rows)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (o, got) in l.model.outputs().iter().zip(&outs) {
            let want = &l.io[&format!("out.{}", o.name)];
            assert_close(&format!("{name} gpu '{}'", o.name), got, want);
        }
    }
}

#[test]
fn rows_past_one_block_run_in_several_and_agree_with_the_cpu() {
    // 37 fixture rows repeated to 3000, in blocks of 700 (the last partial).
    let l = load("mlp_layernorm_gelu");
    let x = match &l.io["in.x"].data {
        herd::model::onnx::Data::F32(v) => v.clone(),
        _ => unreachable!(),
    };
    let rows = 3000;
    let big: Vec<f32> = x.iter().copied().cycle().take(rows * 12).collect();
    let g = GpuOnnx::new(gpu(), &l.model).unwrap().with_block_rows(700);
    assert_eq!(g.block_rows(), 700);
    let got = g.run(gpu(), &[Feed::F32(&big)], rows).unwrap();
    let want = l.model.run(&[Feed::F32(&big)], rows).unwrap();
    assert_close("3000 rows", &got[0], &want[0]);
}

#[test]
fn an_embedding_index_out_of_range_fails_the_run_naming_the_node() {
    let l = load("op_gather");
    let g = GpuOnnx::new(gpu(), &l.model).unwrap();
    let mut f = feeds(&l, 0..2);
    let bad = [0i64, 7, 1, 2];
    f[0] = Feed::I64(&bad);
    let e = g.run(gpu(), &f, 2).unwrap_err().to_string();
    assert!(e.contains("(Gather") && e.contains("out of range"), "{e}");
}

#[test]
fn int64_values_past_32_bits_are_refused_by_name() {
    let path = dir().join("embedding_two_inputs.onnx");
    let (file, files) = read_model(&path);
    let model = OnnxModel::load(&file, &files, &Outputs::Default).unwrap();
    let g = GpuOnnx::new(gpu(), &model).unwrap();
    let dense = vec![0.0f32; 4];
    let ids = [1i64, 2, 1 << 40];
    let e = g
        .run(gpu(), &[Feed::F32(&dense), Feed::I64(&ids)], 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("input 'ids'") && e.contains("32-bit"), "{e}");
}

/// One unary operator over `x` on both paths.
fn unary_both(
    op: &str,
    attrs: Vec<herd::model::onnx::proto::AttributeProto>,
    opset: i64,
    x: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    use herd::model::onnx::proto::data_type::FLOAT;
    use herd::model::onnx::write::{GraphBuilder, batch_dims};
    use herd::model::onnx::{ExternalFiles, OnnxFile};
    let bytes = GraphBuilder::new(opset)
        .input("x", FLOAT, &batch_dims(&[1]))
        .node(op, "op", &["x"], &["y"], attrs)
        .output("y", FLOAT, &batch_dims(&[1]))
        .finish();
    let model = OnnxModel::load(
        &OnnxFile::parse(&bytes).unwrap(),
        &ExternalFiles::new(),
        &Outputs::Default,
    )
    .unwrap();
    let g = GpuOnnx::new(gpu(), &model).unwrap();
    let gpu_out = g.run(gpu(), &[Feed::F32(x)], x.len()).unwrap();
    let cpu_out = model.run(&[Feed::F32(x)], x.len()).unwrap();
    (
        gpu_out[0].as_f32().unwrap().to_vec(),
        cpu_out[0].as_f32().unwrap().to_vec(),
    )
}

#[test]
fn erf_and_gelu_on_the_gpu_agree_with_the_cpu_across_their_range() {
    let x: Vec<f32> = (-6000..=6000).map(|i| i as f32 / 1000.0).collect();
    for (op, attrs, opset) in [
        ("Erf", vec![], 13),
        ("Gelu", vec![], 20),
        (
            "Gelu",
            vec![herd::model::onnx::write::attr_string("approximate", "tanh")],
            20,
        ),
        ("Tanh", vec![], 13),
        ("Sigmoid", vec![], 13),
    ] {
        let (g, c) = unary_both(op, attrs, opset, &x);
        let worst = g
            .iter()
            .zip(&c)
            .zip(&x)
            .map(|((a, b), x)| ((a - b).abs() / (RTOL * b.abs() + ATOL), *x))
            .fold((0.0f32, 0.0f32), |m, v| if v.0 > m.0 { v } else { m });
        eprintln!(
            "{op}: worst {:.3} of the tolerance at x = {}",
            worst.0, worst.1
        );
        assert!(worst.0 <= 1.0, "{op}: {worst:?}");
    }
}
