// ONNX operators along one axis (src/gpu/onnx.rs): softmax, layer and batch
// normalization in place, and ArgMax. A tensor is seen as [outer, n, inner]
// around the axis; one invocation per (outer, inner) pair. `m` holds the
// parameters as u32 words (floats bit-cast).

@group(0) @binding(0) var<storage, read> m: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> shift: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> yi: array<i32>;

const WG: u32 = 64u;

fn index_of(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WG;
}

// m: [outer, n, inner, log]. y in place.
@compute @workgroup_size(64, 1, 1)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let t = index_of(gid, groups);
    let outer = m[0];
    let n = m[1];
    let inner = m[2];
    if (t >= outer * inner || n == 0u) {
        return;
    }
    let base = (t / inner) * n * inner + t % inner;
    var mx = y[base];
    for (var k = 1u; k < n; k++) {
        mx = max(mx, y[base + k * inner]);
    }
    var sum = 0.0;
    for (var k = 0u; k < n; k++) {
        sum += exp(y[base + k * inner] - mx);
    }
    if (m[3] == 1u) {
        let l = log(sum);
        for (var k = 0u; k < n; k++) {
            let at = base + k * inner;
            y[at] = y[at] - mx - l;
        }
    } else {
        for (var k = 0u; k < n; k++) {
            let at = base + k * inner;
            y[at] = exp(y[at] - mx) / sum;
        }
    }
}

// Every run of `norm` values normalized: (v - mean) / sqrt(var + eps) *
// scale + shift (scale and shift already `norm` long; shift all zeros when
// the graph has none). m: [groups, norm, eps]. y in place.
@compute @workgroup_size(64, 1, 1)
fn layer_norm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let g = index_of(gid, groups);
    let norm = m[1];
    if (g >= m[0] || norm == 0u) {
        return;
    }
    let base = g * norm;
    var sum = 0.0;
    for (var j = 0u; j < norm; j++) {
        sum += y[base + j];
    }
    let mean = sum / f32(norm);
    var sq = 0.0;
    for (var j = 0u; j < norm; j++) {
        let d = y[base + j] - mean;
        sq += d * d;
    }
    let inv = 1.0 / sqrt(sq / f32(norm) + bitcast<f32>(m[2]));
    for (var j = 0u; j < norm; j++) {
        y[base + j] = (y[base + j] - mean) * inv * scale[j] + shift[j];
    }
}

// Per channel c of axis 1: v * scale[c] + shift[c], the inference form of
// BatchNormalization with its statistics folded in. One invocation per
// value. m: [count, channels, inner]. y in place.
@compute @workgroup_size(64, 1, 1)
fn channel_affine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[0]) {
        return;
    }
    let c = (i / m[2]) % m[1];
    y[i] = y[i] * scale[c] + shift[c];
}

// The index of the largest value along the axis (the first of equals, or
// the last when m[3] is 1). m: [outer, n, inner, last].
@compute @workgroup_size(64, 1, 1)
fn argmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let t = index_of(gid, groups);
    let n = m[1];
    let inner = m[2];
    if (t >= m[0] * inner) {
        return;
    }
    let base = (t / inner) * n * inner + t % inner;
    var best = 0u;
    for (var k = 1u; k < n; k++) {
        let v = x[base + k * inner];
        let b = x[base + best * inner];
        if (v > b || (m[3] == 1u && v == b)) {
            best = k;
        }
    }
    yi[t] = i32(best);
}
