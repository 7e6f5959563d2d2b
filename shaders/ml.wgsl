// The ai.onnx.ml operators besides the tree walk (src/gpu/onnx/ml.rs):
// LinearClassifier, LinearRegressor, Scaler, Normalizer, Binarizer, Imputer,
// and a tree ensemble's finish (base values, averaging, the binary-class
// rules, the post transform and the label) after `trees.wgsl` added the
// leaves up. Each follows the CPU path (src/model/trees/) step for step, in
// f32, in the same order. exp is the device's (within a few ulps of the
// host's); log and sqrt are brought to the host's rounding where PROBIT's
// cancellation would magnify the difference.
//
// `m` holds the parameters as u32 words (floats bit-cast). NaN is recognised
// by its bits: WGSL lets a compiler assume no NaN in float comparisons.

@group(0) @binding(0) var<storage, read> m: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// Per-class or per-feature constants: coefficients, offsets, imputed values,
// base values.
@group(0) @binding(3) var<storage, read> a: array<f32>;
@group(0) @binding(4) var<storage, read> b: array<f32>;
// Label codes out (i32 words), and the class labels they come from.
@group(0) @binding(5) var<storage, read_write> labels: array<i32>;
@group(0) @binding(6) var<storage, read> classes: array<i32>;
// The first flat index whose value the operator refuses (Binarizer's NaN).
@group(0) @binding(7) var<storage, read_write> flag: atomic<u32>;
// A tree ensemble's sums (rows x targets) then has-a-weight flags.
@group(0) @binding(8) var<storage, read> sums: array<u32>;

const WG: u32 = 64u;

const NONE: u32 = 0u;
const LOGISTIC: u32 = 1u;
const SOFTMAX: u32 = 2u;
const SOFTMAX_ZERO: u32 = 3u;
const PROBIT: u32 = 4u;

const F32_MAX: f32 = 3.40282347e38;
const NAN_BITS: u32 = 0x7fc00000u;

fn index_of(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WG;
}

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn nan() -> f32 {
    return bitcast<f32>(NAN_BITS);
}

// 1 / (1 + e^-x) on |x|, so that large negative scores keep their precision.
fn logistic(v: f32) -> f32 {
    let p = 1.0 / (1.0 + exp(-abs(v)));
    if (v < 0.0) {
        return 1.0 - p;
    }
    return p;
}

// ln(w) within an ulp or two. The device's own log need only be within an
// absolute 2^-21 near 1 (the Vulkan bound; lavapipe's is about that), and
// probit cancels digits: there ln(1 + u) = 2 atanh(u / (2 + u)), by its
// series, with u = w - 1 exact.
fn ln(w: f32) -> f32 {
    if (!(w >= 0.5 && w <= 2.0)) {
        return log(w);
    }
    let u = w - 1.0;
    let s = u / (2.0 + u);
    let s2 = s * s;
    // |s| <= 1/3: the terms past s^15 / 15 are below an ulp.
    var sum = 1.0 / 15.0;
    sum = fma(sum, s2, 1.0 / 13.0);
    sum = fma(sum, s2, 1.0 / 11.0);
    sum = fma(sum, s2, 1.0 / 9.0);
    sum = fma(sum, s2, 1.0 / 7.0);
    sum = fma(sum, s2, 1.0 / 5.0);
    sum = fma(sum, s2, 1.0 / 3.0);
    return 2.0 * fma(s * s2, sum, s);
}

// sqrt(v) rounded as IEEE rounds it (one Newton step on the device's own,
// the residual exact by fma): probit's cancellation needs it.
fn sqrt_exact(v: f32) -> f32 {
    let r = sqrt(v);
    if (is_nan(r) || !(r > 0.0) || r > F32_MAX) {
        return r;
    }
    return r + fma(-r, r, v) / (2.0 * r);
}

// The inverse error function by Winitzki's approximation (a = 0.147), as
// onnxruntime computes it in f32; its constants as the host rounds them.
fn erf_inv(v: f32) -> f32 {
    var sign = 1.0;
    if (v < 0.0) {
        sign = -1.0;
    }
    let w = (1.0 - v) * (1.0 + v);
    let l = ln(w);
    // 2 / (pi * 0.147) and 1 / 0.147 in f32.
    let t = bitcast<f32>(0x408a957au) + 0.5 * l;
    let t2 = bitcast<f32>(0x40d9afe4u) * l;
    let t3 = -t + sqrt_exact(t * t - t2);
    return sign * sqrt_exact(t3);
}

fn probit(p: f32) -> f32 {
    return bitcast<f32>(0x3fb504f3u) * erf_inv(2.0 * p - 1.0);
}

// The post transform of `n >= 2` scores at y[at..at + n].
fn transform_row(at: u32, n: u32, code: u32) {
    switch code {
        case LOGISTIC: {
            for (var k = 0u; k < n; k++) {
                y[at + k] = logistic(y[at + k]);
            }
        }
        case PROBIT: {
            for (var k = 0u; k < n; k++) {
                y[at + k] = probit(y[at + k]);
            }
        }
        case SOFTMAX, SOFTMAX_ZERO: {
            var mx = -F32_MAX;
            for (var k = 0u; k < n; k++) {
                if (y[at + k] > mx) {
                    mx = y[at + k];
                }
            }
            let zero = code == SOFTMAX_ZERO;
            let exp_neg_max = exp(-mx);
            var sum = 0.0;
            for (var k = 0u; k < n; k++) {
                let v = y[at + k];
                if (!zero || v > 0.0000001 || v < -0.0000001) {
                    y[at + k] = exp(v - mx);
                    sum += y[at + k];
                } else {
                    y[at + k] = v * exp_neg_max;
                }
            }
            for (var k = 0u; k < n; k++) {
                y[at + k] = y[at + k] / sum;
            }
        }
        default: {}
    }
}

// LinearClassifier and LinearRegressor, one invocation per row.
// m: [rows, width, outputs, has_intercepts, transform, classifier,
//     out_width]. a: coefficients [outputs, width]; b: intercepts.
// A classifier writes its label (from `classes`) to `labels`.
@compute @workgroup_size(64, 1, 1)
fn linear(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = index_of(gid, groups);
    let rows = m[0];
    let width = m[1];
    let outputs = m[2];
    let code = m[4];
    let out_width = m[6];
    if (r >= rows) {
        return;
    }
    let at = r * out_width;
    for (var k = 0u; k < outputs; k++) {
        var acc = 0.0;
        for (var j = 0u; j < width; j++) {
            acc += x[r * width + j] * a[k * width + j];
        }
        if (m[3] == 1u) {
            acc += b[k];
        }
        y[at + k] = acc;
    }
    if (m[5] == 0u) {
        // A regressor: one target takes only PROBIT.
        if (outputs >= 2u) {
            transform_row(at, outputs, code);
        } else if (code == PROBIT) {
            y[at] = probit(y[at]);
        }
        return;
    }
    if (outputs == 1u) {
        // One score: the label is its sign; the second class is derived.
        let s = y[at];
        labels[r] = classes[select(0u, 1u, s > 0.0)];
        if (code == PROBIT) {
            y[at] = probit(s);
            y[at + 1u] = nan();
        } else if (code == LOGISTIC) {
            let p = logistic(s);
            y[at] = 1.0 - p;
            y[at + 1u] = p;
        } else {
            y[at] = 1.0 - s;
            y[at + 1u] = s;
        }
        return;
    }
    var best = 0u;
    for (var k = 1u; k < outputs; k++) {
        if (y[at + k] > y[at + best]) {
            best = k;
        }
    }
    labels[r] = classes[best];
    transform_row(at, outputs, code);
}

// Scaler: (x - offset) * scale. m: [count, width, per_feature].
@compute @workgroup_size(64, 1, 1)
fn scaler(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[0]) {
        return;
    }
    let j = select(0u, i % m[1], m[2] == 1u);
    y[i] = (x[i] - a[j]) * b[j];
}

// Imputer: a value equal to `replaced` (NaN matches NaN) becomes its
// feature's imputed value. m: [count, width, per_feature, replaced].
@compute @workgroup_size(64, 1, 1)
fn imputer(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[0]) {
        return;
    }
    let v = x[i];
    let r = bitcast<f32>(m[3]);
    var hit = false;
    if (is_nan(v)) {
        hit = is_nan(r);
    } else {
        hit = !is_nan(r) && v == r;
    }
    if (hit) {
        y[i] = a[select(0u, i % m[1], m[2] == 1u)];
    } else {
        y[i] = v;
    }
}

// Binarizer: 1 above the threshold, else 0; the first NaN's index goes to
// `flag` (the host fails the run naming its row). m: [count, threshold].
@compute @workgroup_size(64, 1, 1)
fn binarizer(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[0]) {
        return;
    }
    let v = x[i];
    if (is_nan(v)) {
        atomicMin(&flag, i);
        y[i] = 0.0;
        return;
    }
    y[i] = select(0.0, 1.0, v > bitcast<f32>(m[1]));
}

// Normalizer, one invocation per row: divided by the row's max, L1 or L2
// norm, left as is when that is 0. m: [rows, width, norm (0 MAX, 1 L1, 2 L2)].
@compute @workgroup_size(64, 1, 1)
fn normalizer(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = index_of(gid, groups);
    let width = m[1];
    if (r >= m[0]) {
        return;
    }
    let at = r * width;
    if (m[2] == 0u) {
        var mx = -F32_MAX;
        for (var j = 0u; j < width; j++) {
            let v = x[at + j];
            if (!is_nan(v) && mx < v) {
                mx = v;
            }
        }
        for (var j = 0u; j < width; j++) {
            y[at + j] = select(x[at + j], x[at + j] / mx, mx != 0.0);
        }
        return;
    }
    var sum = 0.0;
    for (var j = 0u; j < width; j++) {
        let v = x[at + j];
        if (m[2] == 1u) {
            sum += abs(v);
        } else {
            sum += v * v;
        }
    }
    for (var j = 0u; j < width; j++) {
        let v = x[at + j];
        if (sum == 0.0) {
            y[at + j] = v;
        } else if (m[2] == 1u) {
            y[at + j] = v / sum;
        } else {
            let q = sqrt(v * v / sum);
            y[at + j] = select(q, -q, v < 0.0);
        }
    }
}

// A tree ensemble's finish, one invocation per row, from the tree kernel's
// sums and flags (f32 models). m: [rows, n_targets, classifier, aggregate
// (0 SUM, 1 AVERAGE, 2 MIN, 3 MAX), n_trees (f32 bits), transform,
// base values, binary, weights_all_positive]. a: base values (f32).
@compute @workgroup_size(64, 1, 1)
fn tree_finish(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = index_of(gid, groups);
    let rows = m[0];
    let n = m[1];
    if (r >= rows) {
        return;
    }
    let at = r * n;
    for (var k = 0u; k < n; k++) {
        y[at + k] = bitcast<f32>(sums[at + k]);
    }
    if (m[2] == 0u) {
        finish_regressor(r, at);
    } else if (n > 2u) {
        finish_classes(r, at);
    } else {
        finish_two_classes(r, at);
    }
}

fn has(at: u32) -> bool {
    return sums[m[0] * m[1] + at] != 0u;
}

fn finish_regressor(r: u32, at: u32) {
    let n = m[1];
    let aggregate = m[3];
    let n_trees = bitcast<f32>(m[4]);
    let nb = m[6];
    if (n == 1u) {
        var origin = 0.0;
        if (nb == 1u) {
            origin = a[0];
        }
        let s = y[at];
        var v = s + origin;
        if (aggregate == 1u) {
            v = s / n_trees + origin;
        } else if (aggregate >= 2u && !has(at)) {
            v = origin;
        }
        y[at] = select(v, probit(v), m[5] == PROBIT);
        return;
    }
    // A target no leaf gave a weight to scores 0, its base value not added.
    for (var k = 0u; k < n; k++) {
        var base = 0.0;
        if (nb == n) {
            base = a[k];
        }
        if (!has(at + k)) {
            y[at + k] = 0.0;
        } else if (aggregate == 1u) {
            y[at + k] = y[at + k] / n_trees + base;
        } else {
            y[at + k] = y[at + k] + base;
        }
    }
    transform_row(at, n, m[5]);
}

fn finish_classes(r: u32, at: u32) {
    let n = m[1];
    let nb = min(m[6], n);
    // Classes with a base value count as scored.
    for (var k = 0u; k < nb; k++) {
        if (has(at + k)) {
            y[at + k] = y[at + k] + a[k];
        } else {
            y[at + k] = a[k];
        }
    }
    // The first class with the highest score; class 0 when none has one.
    var best = 0u;
    var found = false;
    for (var k = 0u; k < n; k++) {
        if ((k < nb || has(at + k)) && (!found || y[at + k] > y[at + best])) {
            best = k;
            found = true;
        }
    }
    labels[r] = classes[best];
    transform_row(at, n, m[5]);
}

fn finish_two_classes(r: u32, at: u32) {
    let nb = m[6];
    let code = m[5];
    var s0 = y[at];
    var s1 = y[at + 1u];
    let has0 = has(at);
    let has1 = has(at + 1u);
    // -1: no second class derived; 0 or 1: 1 - p; 2 or 3: the negated score.
    var add_second = -1;
    var len = 2u;
    if (nb == 2u) {
        if (has1) {
            s1 = a[1] + s0;
            s0 = -s1;
        } else {
            s1 = s1 + a[1];
            s0 = s0 + a[0];
        }
    } else if (nb == 1u) {
        s0 = s0 + a[0];
        if (!has1) {
            len = 1u;
        }
    } else if (nb == 0u) {
        add_second = 3;
        if (!has1) {
            len = 1u;
        }
    }
    var positive = 0.0;
    if (len == 2u && has1) {
        positive = s1;
    } else if (has0) {
        positive = s0;
    }
    if (m[7] == 1u) {
        if (m[8] == 1u) {
            add_second = select(1, 0, positive > 0.5);
        } else {
            add_second = select(3, 2, positive > 0.0);
        }
        labels[r] = classes[select(0u, 1u, add_second == 0 || add_second == 2)];
    } else {
        labels[r] = select(0, 1, positive > 0.0);
    }
    if (len == 2u) {
        // Both classes written: a class without a weight scores 0.
        y[at] = select(0.0, s0, has0);
        y[at + 1u] = select(0.0, s1, has1);
        transform_row(at, 2u, code);
        return;
    }
    let s = s0;
    if (code == PROBIT) {
        y[at] = probit(s);
        y[at + 1u] = select(0.0, nan(), add_second >= 0);
    } else if (add_second == 0 || add_second == 1) {
        if (code == LOGISTIC) {
            let p = logistic(s);
            y[at] = 1.0 - p;
            y[at + 1u] = p;
        } else {
            y[at] = 1.0 - s;
            y[at + 1u] = s;
        }
    } else if (add_second >= 2) {
        if (code == LOGISTIC) {
            y[at] = logistic(-s);
            y[at + 1u] = logistic(s);
        } else {
            y[at] = -s;
            y[at + 1u] = s;
        }
    } else {
        y[at] = s;
        y[at + 1u] = 0.0;
    }
}
