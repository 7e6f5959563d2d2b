// A dense layer with few outputs (an mlp's last layer, 256 -> 1): y = act(x
// W^T + b). The tiled kernel (dense.wgsl) would spend 127 of every 128
// multiply-adds on columns that do not exist, so here eight invocations
// share one row: invocation l sums x[row, l + 8 i] W[o, l + 8 i], so the eight
// read neighbouring floats of the row, and the partial sums are added in
// workgroup memory. 32 rows per workgroup. The layer is bound by reading x
// once, not by arithmetic.

struct Params {
    rows: u32,
    in_dim: u32,
    out_dim: u32,
    // 1: relu after the bias; 0: none.
    relu: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const LANES: u32 = 8u;
const ROWS: u32 = 32u;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let lane = li % LANES;
    let r = li / LANES;
    let row = wg.x * ROWS + r;
    let live = row < p.rows;
    for (var o = 0u; o < p.out_dim; o++) {
        var s = 0.0;
        if (live) {
            for (var k = lane; k < p.in_dim; k += LANES) {
                s = fma(x[row * p.in_dim + k], w[o * p.in_dim + k], s);
            }
        }
        partial[li] = s;
        workgroupBarrier();
        if (lane == 0u && live) {
            var v = b[o];
            for (var l = 0u; l < LANES; l++) {
                v += partial[li + l];
            }
            if (p.relu == 1u) {
                v = max(v, 0.0);
            }
            y[row * p.out_dim + o] = v;
        }
        workgroupBarrier();
    }
}
