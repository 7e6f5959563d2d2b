// Element-wise operators of ONNX graphs (src/gpu/onnx.rs), one invocation
// per value. `m` holds each dispatch's parameters as u32 words (floats
// bit-cast); its layout is given per entry point. Integer tensors are i32 on
// the device (herd checks int64 values fit when it uploads them).
//
// Dispatches are two-dimensional when a tensor has more values than one
// dimension of workgroups holds: the value index is x + y * (64 * groups in x).

@group(0) @binding(0) var<storage, read> m: array<u32>;
@group(0) @binding(1) var<storage, read> af: array<f32>;
@group(0) @binding(2) var<storage, read> bf: array<f32>;
@group(0) @binding(3) var<storage, read_write> yf: array<f32>;
@group(0) @binding(4) var<storage, read> ai: array<i32>;
@group(0) @binding(5) var<storage, read> bi: array<i32>;
@group(0) @binding(6) var<storage, read_write> yi: array<i32>;

const WG: u32 = 64u;
const MAX_RANK: u32 = 8u;

fn index_of(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WG;
}

// erf within about 2e-7: below 0.8 its Taylor series (alternating, but
// with terms below 0.8 there is little to cancel); from 0.8 the continued
// fraction of erfc, evaluated from the bottom (60 terms: erfc to 3e-7
// relative, so 1 + erf(-a) keeps its digits where GELU needs them). exp(-a^2)
// is taken as exp(-hi) (1 - lo) with a^2 = hi + lo split by fma, so the
// rounding of a^2 does not reach the result. (Each bound measured in float32
// against the exact function over [0, 4] in steps of 0.0005.)
fn erf1(x: f32) -> f32 {
    let a = abs(x);
    if (a >= 4.0) {
        return sign(x);
    }
    if (a < 0.8) {
        let a2 = a * a;
        var p = a;
        var sum = a;
        for (var n = 1u; n < 40u; n++) {
            p = -p * a2 / f32(n);
            let t = p / f32(2u * n + 1u);
            sum += t;
            if (abs(t) < abs(sum) * 1e-9) {
                break;
            }
        }
        return sign(x) * 1.1283791670955126 * sum;
    }
    let hi = a * a;
    let lo = fma(a, a, -hi);
    let e = exp(-hi) * (1.0 - lo);
    // erfc(a) = exp(-a^2) / sqrt(pi) / (a + (1/2) / (a + 1 / (a + (3/2) / (a + ...))))
    var f = a;
    for (var n = 60u; n >= 1u; n--) {
        f = a + (f32(n) * 0.5) / f;
    }
    let erfc = e * 0.5641895835477563 / f;
    return sign(x) * (1.0 - erfc);
}

// Codes: 0 sqrt, 1 relu, 2 leaky relu (alpha in m[2]), 3 sigmoid, 4 tanh,
// 5 erf, 6 gelu, 7 gelu (tanh form).
fn unary1(op: u32, x: f32, alpha: f32) -> f32 {
    switch op {
        case 0u: { return sqrt(x); }
        case 1u: { return max(x, 0.0); }
        case 2u: { return select(x, alpha * x, x < 0.0); }
        case 3u: { return 1.0 / (1.0 + exp(-x)); }
        case 4u: { return tanh(x); }
        case 5u: { return erf1(x); }
        case 6u: { return 0.5 * x * (1.0 + erf1(x * 0.7071067811865476)); }
        default: {
            return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
        }
    }
}

// m: [op, count, alpha]. yf in place.
@compute @workgroup_size(64, 1, 1)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[1]) {
        return;
    }
    yf[i] = unary1(m[0], yf[i], bitcast<f32>(m[2]));
}

// m: [count, lo, hi] (floats bit-cast). yf in place.
@compute @workgroup_size(64, 1, 1)
fn clip_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[0]) {
        return;
    }
    let v = yf[i];
    let lo = bitcast<f32>(m[1]);
    let hi = bitcast<f32>(m[2]);
    yf[i] = select(select(v, hi, v > hi), lo, v < lo);
}

// m: [count, lo, hi] (i32 bit-cast). yi in place.
@compute @workgroup_size(64, 1, 1)
fn clip_i32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[0]) {
        return;
    }
    yi[i] = min(max(yi[i], bitcast<i32>(m[1])), bitcast<i32>(m[2]));
}

// Where output value i reads a and b: m = [op, rank, count, dims[8],
// a strides[8], b strides[8]], strides 0 along broadcast dimensions.
fn operands(i: u32) -> vec2<u32> {
    let rank = m[1];
    var rest = i;
    var oa = 0u;
    var ob = 0u;
    for (var d = 0u; d < rank; d++) {
        let k = rank - 1u - d;
        let dim = m[3u + k];
        let idx = rest % dim;
        rest = rest / dim;
        oa += idx * m[3u + MAX_RANK + k];
        ob += idx * m[3u + 2u * MAX_RANK + k];
    }
    return vec2<u32>(oa, ob);
}

// Codes: 0 add, 1 sub, 2 mul, 3 div, 4 pow.
@compute @workgroup_size(64, 1, 1)
fn binary_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[2]) {
        return;
    }
    let o = operands(i);
    let a = af[o.x];
    let b = bf[o.y];
    var v: f32;
    switch m[0] {
        case 0u: { v = a + b; }
        case 1u: { v = a - b; }
        case 2u: { v = a * b; }
        case 3u: { v = a / b; }
        default: { v = pow_f32(a, b); }
    }
    yf[i] = v;
}

// pow as C's powf: WGSL's pow is undefined for a negative base, where an
// integer exponent still has a value.
fn pow_f32(a: f32, b: f32) -> f32 {
    if (b == 0.0) {
        return 1.0;
    }
    if (a >= 0.0 || b != floor(b)) {
        return pow(a, b);
    }
    let r = pow(-a, b);
    let odd = (abs(b) % 2.0) == 1.0;
    return select(r, -r, odd);
}

@compute @workgroup_size(64, 1, 1)
fn binary_i32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[2]) {
        return;
    }
    let o = operands(i);
    let a = ai[o.x];
    let b = bi[o.y];
    var v: i32;
    switch m[0] {
        case 0u: { v = a + b; }
        case 1u: { v = a - b; }
        case 2u: { v = a * b; }
        default: { v = a / b; }
    }
    yi[i] = v;
}

// Integers narrowed as C narrows them. Codes: 0 none, 1 int8, 2 uint8,
// 3 int16, 4 uint16.
fn narrow(v: i32, code: u32) -> i32 {
    switch code {
        case 1u: { return (v << 24u) >> 24u; }
        case 2u: { return v & 255; }
        case 3u: { return (v << 16u) >> 16u; }
        case 4u: { return v & 65535; }
        default: { return v; }
    }
}

// m: [count, narrow code]: floats truncated toward zero, then narrowed.
@compute @workgroup_size(64, 1, 1)
fn cast_f32_i32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[0]) {
        return;
    }
    yi[i] = narrow(i32(af[i]), m[1]);
}

// m: [count].
@compute @workgroup_size(64, 1, 1)
fn cast_i32_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[0]) {
        return;
    }
    yf[i] = f32(ai[i]);
}

// m: [count, narrow code].
@compute @workgroup_size(64, 1, 1)
fn cast_i32_i32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[0]) {
        return;
    }
    yi[i] = narrow(ai[i], m[1]);
}
