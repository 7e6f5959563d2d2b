// The output activation of an mlp, in place, one invocation per row:
// sigmoid on every score, or a numerically stable softmax across the row.

struct Params {
    rows: u32,
    width: u32,
    // 0: sigmoid; 1: softmax.
    mode: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.width;
    if (p.mode == 0u) {
        for (var c = 0u; c < p.width; c++) {
            y[base + c] = 1.0 / (1.0 + exp(-y[base + c]));
        }
        return;
    }
    var m = y[base];
    for (var c = 1u; c < p.width; c++) {
        m = max(m, y[base + c]);
    }
    var sum = 0.0;
    for (var c = 0u; c < p.width; c++) {
        let e = exp(y[base + c] - m);
        y[base + c] = e;
        sum += e;
    }
    for (var c = 0u; c < p.width; c++) {
        y[base + c] = y[base + c] / sum;
    }
}
