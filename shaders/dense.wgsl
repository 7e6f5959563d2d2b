// One dense layer: y = act(x W^T + b), with W laid out [out, in] as
// torch.nn.Linear stores it. Tiled 16 x 16: each workgroup computes a
// 16 x 16 block of y, staging 16-wide slices of x and W in workgroup memory.

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

const T: u32 = 16u;

// xs[r][k]: row r of the block, column k of the slice; ws[c][k] likewise.
var<workgroup> xs: array<array<f32, 16>, 16>;
var<workgroup> ws: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let row = wg.y * T + l.y;
    let col = wg.x * T + l.x;
    // The W row this invocation stages: output column wg.x * T + l.y.
    let wrow = wg.x * T + l.y;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.in_dim; k0 += T) {
        let k = k0 + l.x;
        var xv = 0.0;
        if (row < p.rows && k < p.in_dim) {
            xv = x[row * p.in_dim + k];
        }
        xs[l.y][l.x] = xv;
        var wv = 0.0;
        if (wrow < p.out_dim && k < p.in_dim) {
            wv = w[wrow * p.in_dim + k];
        }
        ws[l.y][l.x] = wv;
        workgroupBarrier();
        for (var j = 0u; j < T; j++) {
            acc += xs[l.y][j] * ws[l.x][j];
        }
        workgroupBarrier();
    }
    if (row < p.rows && col < p.out_dim) {
        var v = acc + b[col];
        if (p.relu == 1u) {
            v = max(v, 0.0);
        }
        y[row * p.out_dim + col] = v;
    }
}
