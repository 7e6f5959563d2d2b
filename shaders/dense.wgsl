// One dense layer: y = act(x W^T + b), with W laid out [out, in] as
// torch.nn.Linear stores it.
//
// A tiled matrix product. Each workgroup computes a 128 x 128 block of y
// (rows x columns); each of its 16 x 16 invocations an 8 x 8 sub-block: rows
// 4 ty .. 4 ty + 3 and 64 + 4 ty .. 64 + 4 ty + 3, columns likewise with tx,
// so that every value staged in workgroup memory is read as a vec4 and used
// eight times from registers (64 multiply-adds per four vec4 loads).
//
// x and W are staged BK columns of `in` at a time, transposed (k-major) so the
// inner loop reads four consecutive rows (or columns) as one vec4. The host
// sets BK from the adapter's workgroup memory (the WebGPU minimum of 16 KiB
// allows 16). The next slice is read from global memory into registers while
// the current one is multiplied, so the loads' latency hides behind the
// arithmetic. The 16 accumulators are named rather than indexed, so no
// compiler can place them in local memory.

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

const BM: u32 = 128u;
const BK: u32 = 16u;
// vec4s per staged k column, padded by one so the transposed stores of
// neighbouring k land in different banks.
const LD: u32 = 33u;
// Floats each invocation stages per slice, from x and from W.
const PER: u32 = BM * BK / 256u;
// Whether the next slice is read while the current one is multiplied.
const PREFETCH: bool = true;

var<workgroup> xs: array<vec4<f32>, BK * LD>;
var<workgroup> ws: array<vec4<f32>, BK * LD>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let tx = li % 16u;
    let ty = li / 16u;
    let row0 = wg.y * BM;
    let col0 = wg.x * BM;

    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);

    // Staging: element e of this invocation is row (li + 256 e) / BK of the
    // block, column (li + 256 e) % BK of the slice, so neighbouring
    // invocations read neighbouring floats of a row. With PREFETCH the next
    // slice is read into registers while this one is multiplied.
    var xr: array<f32, PER>;
    var wr: array<f32, PER>;
    if (PREFETCH) {
        load_slice(&xr, &wr, row0, col0, 0u, li);
    }
    for (var k0 = 0u; k0 < p.in_dim; k0 += BK) {
        if (!PREFETCH) {
            load_slice(&xr, &wr, row0, col0, k0, li);
        }
        for (var e = 0u; e < PER; e++) {
            let idx = li + 256u * e;
            let r = idx / BK;
            let k = idx % BK;
            xs[k * LD + r / 4u][r % 4u] = xr[e];
            ws[k * LD + r / 4u][r % 4u] = wr[e];
        }
        workgroupBarrier();
        if (PREFETCH && k0 + BK < p.in_dim) {
            load_slice(&xr, &wr, row0, col0, k0 + BK, li);
        }
        for (var k = 0u; k < BK; k++) {
            let a0 = xs[k * LD + ty];
            let a1 = xs[k * LD + 16u + ty];
            let b0 = ws[k * LD + tx];
            let b1 = ws[k * LD + 16u + tx];
            c00 = fma(vec4<f32>(a0.x), b0, c00);
            c01 = fma(vec4<f32>(a0.x), b1, c01);
            c10 = fma(vec4<f32>(a0.y), b0, c10);
            c11 = fma(vec4<f32>(a0.y), b1, c11);
            c20 = fma(vec4<f32>(a0.z), b0, c20);
            c21 = fma(vec4<f32>(a0.z), b1, c21);
            c30 = fma(vec4<f32>(a0.w), b0, c30);
            c31 = fma(vec4<f32>(a0.w), b1, c31);
            c40 = fma(vec4<f32>(a1.x), b0, c40);
            c41 = fma(vec4<f32>(a1.x), b1, c41);
            c50 = fma(vec4<f32>(a1.y), b0, c50);
            c51 = fma(vec4<f32>(a1.y), b1, c51);
            c60 = fma(vec4<f32>(a1.z), b0, c60);
            c61 = fma(vec4<f32>(a1.z), b1, c61);
            c70 = fma(vec4<f32>(a1.w), b0, c70);
            c71 = fma(vec4<f32>(a1.w), b1, c71);
        }
        workgroupBarrier();
    }

    let ra = row0 + 4u * ty;
    let rb = row0 + 64u + 4u * ty;
    let ca = col0 + 4u * tx;
    let cb = col0 + 64u + 4u * tx;
    store(ra, ca, c00);
    store(ra, cb, c01);
    store(ra + 1u, ca, c10);
    store(ra + 1u, cb, c11);
    store(ra + 2u, ca, c20);
    store(ra + 2u, cb, c21);
    store(ra + 3u, ca, c30);
    store(ra + 3u, cb, c31);
    store(rb, ca, c40);
    store(rb, cb, c41);
    store(rb + 1u, ca, c50);
    store(rb + 1u, cb, c51);
    store(rb + 2u, ca, c60);
    store(rb + 2u, cb, c61);
    store(rb + 3u, ca, c70);
    store(rb + 3u, cb, c71);
}

// Reads this invocation's share of slice k0 (zero outside x and W).
fn load_slice(
    xr: ptr<function, array<f32, PER>>,
    wr: ptr<function, array<f32, PER>>,
    row0: u32,
    col0: u32,
    k0: u32,
    li: u32,
) {
    for (var e = 0u; e < PER; e++) {
        let idx = li + 256u * e;
        let r = idx / BK;
        let k = k0 + idx % BK;
        var xv = 0.0;
        var wv = 0.0;
        if (row0 + r < p.rows && k < p.in_dim) {
            xv = x[(row0 + r) * p.in_dim + k];
        }
        if (col0 + r < p.out_dim && k < p.in_dim) {
            wv = w[(col0 + r) * p.in_dim + k];
        }
        (*xr)[e] = xv;
        (*wr)[e] = wv;
    }
}

// Adds the bias, applies relu when asked, and writes the columns
// col .. col + 3 of `row` that exist.
fn store(row: u32, col: u32, acc: vec4<f32>) {
    if (row >= p.rows) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let c = col + j;
        if (c < p.out_dim) {
            var v = acc[j] + b[c];
            if (p.relu == 1u) {
                v = max(v, 0.0);
            }
            y[row * p.out_dim + c] = v;
        }
    }
}
