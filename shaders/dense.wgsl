// One dense layer: y = act(x W^T + b), with W laid out [out, in] as
// torch.nn.Linear stores it.
//
// Each workgroup computes a 64 x 64 block of y; each of its 16 x 16
// invocations a 4 x 4 sub-block (rows l.y + 16 i, columns l.x + 16 j), so every
// value staged in workgroup memory is used four times from registers. x and W
// are staged 16 columns of `in` at a time.

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

// Block edge (rows and columns of y) and staged slice width.
const BM: u32 = 64u;
const BK: u32 = 16u;

// xs[r][k]: row r of the block, column k of the slice; ws[c][k] likewise.
var<workgroup> xs: array<array<f32, 16>, 64>;
var<workgroup> ws: array<array<f32, 16>, 64>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) l: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BM;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < p.in_dim; k0 += BK) {
        for (var e = 0u; e < 4u; e++) {
            let idx = li + 256u * e;
            let r = idx / BK;
            let k = idx % BK;
            let kk = k0 + k;
            var xv = 0.0;
            if (row0 + r < p.rows && kk < p.in_dim) {
                xv = x[(row0 + r) * p.in_dim + kk];
            }
            xs[r][k] = xv;
            var wv = 0.0;
            if (col0 + r < p.out_dim && kk < p.in_dim) {
                wv = w[(col0 + r) * p.in_dim + kk];
            }
            ws[r][k] = wv;
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            var a: array<f32, 4>;
            var c: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[l.y + 16u * i][k];
                c[i] = ws[l.x + 16u * i][k];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] += a[i] * c[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + l.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + l.x + 16u * j;
            if (row < p.rows && col < p.out_dim) {
                var v = acc[i * 4u + j] + b[col];
                if (p.relu == 1u) {
                    v = max(v, 0.0);
                }
                y[row * p.out_dim + col] = v;
            }
        }
    }
}
