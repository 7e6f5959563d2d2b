// ReduceSum and ReduceMean of ONNX graphs (src/gpu/onnx.rs), one invocation
// per output value, summing in the order of the input.
// m: [count, out rank, reduced rank, reduced count, mean, out dims[8],
//     out strides into x[8], reduced dims[8], reduced strides into x[8]].

@group(0) @binding(0) var<storage, read> m: array<u32>;
@group(0) @binding(1) var<storage, read> xf: array<f32>;
@group(0) @binding(2) var<storage, read_write> yf: array<f32>;
@group(0) @binding(3) var<storage, read> xi: array<i32>;
@group(0) @binding(4) var<storage, read_write> yi: array<i32>;

const WG: u32 = 64u;
const MAX_RANK: u32 = 8u;
const HEAD: u32 = 5u;

fn index_of(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WG;
}

// Where output value i starts in x.
fn start(i: u32) -> u32 {
    let rank = m[1];
    var rest = i;
    var at = 0u;
    for (var t = 0u; t < rank; t++) {
        let k = rank - 1u - t;
        let dim = m[HEAD + k];
        at += (rest % dim) * m[HEAD + MAX_RANK + k];
        rest = rest / dim;
    }
    return at;
}

// The offset of the r-th reduced value from the start.
fn offset(r: u32) -> u32 {
    let rank = m[2];
    var rest = r;
    var at = 0u;
    for (var t = 0u; t < rank; t++) {
        let k = rank - 1u - t;
        let dim = m[HEAD + 2u * MAX_RANK + k];
        at += (rest % dim) * m[HEAD + 3u * MAX_RANK + k];
        rest = rest / dim;
    }
    return at;
}

@compute @workgroup_size(64, 1, 1)
fn reduce_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[0]) {
        return;
    }
    let base = start(i);
    var sum = 0.0;
    for (var r = 0u; r < m[3]; r++) {
        sum += xf[base + offset(r)];
    }
    if (m[4] == 1u && m[3] > 0u) {
        sum = sum / f32(m[3]);
    }
    yf[i] = sum;
}

@compute @workgroup_size(64, 1, 1)
fn reduce_i32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[0]) {
        return;
    }
    let base = start(i);
    var sum = 0;
    for (var r = 0u; r < m[3]; r++) {
        sum += xi[base + offset(r)];
    }
    if (m[4] == 1u && m[3] > 0u) {
        sum = sum / i32(m[3]);
    }
    yi[i] = sum;
}
