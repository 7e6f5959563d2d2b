// MatMul and Gemm of ONNX graphs that are not dense layers on a constant
// weight (those run on the dense kernel): both operands computed per row,
// broadcast leading dimensions, transposed operands. One invocation per
// output value, summing over k in order (src/gpu/onnx.rs).
//
// m: [count, batch rank, M, N, K, a row stride, a k stride, b k stride,
//     b column stride, alpha, has c, beta, c row stride, c column stride,
//     batch dims[6], a batch strides[6], b batch strides[6]]

@group(0) @binding(0) var<storage, read> m: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
const MAX_BATCH: u32 = 6u;
const HEAD: u32 = 14u;

fn index_of(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WG;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[0]) {
        return;
    }
    let rows = m[2];
    let cols = m[3];
    let k = m[4];
    let col = i % cols;
    let row = (i / cols) % rows;
    var rest = i / (cols * rows);
    var oa = 0u;
    var ob = 0u;
    let rank = m[1];
    for (var t = 0u; t < rank; t++) {
        let d = rank - 1u - t;
        let dim = m[HEAD + d];
        let idx = rest % dim;
        rest = rest / dim;
        oa += idx * m[HEAD + MAX_BATCH + d];
        ob += idx * m[HEAD + 2u * MAX_BATCH + d];
    }
    oa += row * m[5];
    ob += col * m[8];
    var acc = 0.0;
    for (var p = 0u; p < k; p++) {
        acc += a[oa + p * m[6]] * b[ob + p * m[7]];
    }
    var v = bitcast<f32>(m[9]) * acc;
    if (m[10] == 1u) {
        v += bitcast<f32>(m[11]) * c[row * m[12] + col * m[13]];
    }
    y[i] = v;
}
