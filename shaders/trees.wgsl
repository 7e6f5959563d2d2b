// Tree ensembles (ai.onnx.ml TreeEnsemble*): one invocation per row walks
// every tree in order and either adds the leaves' weights up (f32 models:
// the same additions, in the same order, as the CPU path) or writes the
// leaf each tree reached (double models: the host adds them up in f64).
//
// Comparisons are exact in f32: the host turned every threshold into the
// f32 test that holds for the same f32 inputs as the model's own test, and
// NaN is recognised by its bits (WGSL lets a compiler assume no NaN in
// float comparisons), so a missing value goes where the model says.

struct Params {
    rows: u32,
    width: u32,
    n_trees: u32,
    n_targets: u32,
    // 0: SUM or AVERAGE (averaged on the host), 1: MIN, 2: MAX.
    aggregate: u32,
    // 1: write leaf indices, rows x trees, instead of scores.
    leaf_mode: u32,
    row_offset: u32,
    // Invocations per row of the dispatch grid (groups in x times 64).
    stride: u32,
    // Nodes on the deepest path, leaf included: a bound on the walk.
    max_depth: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Node {
    feature: u32,
    // Bits 0-3: the test; bit 4: a missing value goes to `yes`; bits 8-31:
    // the member set's length.
    flags: u32,
    // The threshold's f32 bits, or the member set's first index.
    value: u32,
    yes: u32,
    no: u32,
}

const LEAF: u32 = 0x80000000u;
const LEQ: u32 = 0u;
const LT: u32 = 1u;
const GTE: u32 = 2u;
const GT: u32 = 3u;
const EQ: u32 = 4u;
const NEQ: u32 = 5u;
// x is one of the f32 values of the set.
const MEMBER_F32: u32 = 6u;
// x truncated to i32 as x86 truncates is one of the i32 values of the set.
const MEMBER_I32: u32 = 7u;
const NEVER: u32 = 8u;
const ALWAYS: u32 = 9u;
const I32_MIN: i32 = -2147483647 - 1;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> nodes: array<Node>;
@group(0) @binding(3) var<storage, read> roots: array<u32>;
// Per leaf: its first weight and how many it has.
@group(0) @binding(4) var<storage, read> leaves: array<vec2<u32>>;
// Per weight: its target and its value's f32 bits.
@group(0) @binding(5) var<storage, read> weights: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read> members: array<u32>;
// Scores (rows x targets, f32 bits) then the has-a-weight flags (rows x
// targets); or leaf indices (rows x trees).
@group(0) @binding(7) var<storage, read_write> out: array<u32>;

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// A C cast to i32 as x86 does it: NaN and values out of range give i32::MIN.
fn truncate(v: f32) -> i32 {
    if (is_nan(v) || v >= 2147483648.0 || v < -2147483648.0) {
        return I32_MIN;
    }
    return i32(v);
}

fn member(first: u32, len: u32, word: u32) -> bool {
    for (var i = 0u; i < len; i++) {
        if (members[first + i] == word) {
            return true;
        }
    }
    return false;
}

fn holds(node: Node, v: f32) -> bool {
    let mode = node.flags & 15u;
    let len = node.flags >> 8u;
    if (mode == MEMBER_I32) {
        return member(node.value, len, bitcast<u32>(truncate(v)));
    }
    if (is_nan(v)) {
        return mode == NEQ || mode == ALWAYS;
    }
    let t = bitcast<f32>(node.value);
    switch mode {
        case LEQ: { return v <= t; }
        case LT: { return v < t; }
        case GTE: { return v >= t; }
        case GT: { return v > t; }
        case EQ: { return v == t; }
        case NEQ: { return v != t; }
        case MEMBER_F32: {
            // -0 and 0 are one member: compare as floats, not as bits.
            for (var i = 0u; i < len; i++) {
                if (bitcast<f32>(members[node.value + i]) == v) {
                    return true;
                }
            }
            return false;
        }
        case ALWAYS: { return true; }
        default: { return false; }
    }
}

fn leaf_of(tree: u32, base: u32) -> u32 {
    var c = roots[tree];
    for (var d = 0u; d < params.max_depth && (c & LEAF) == 0u; d++) {
        let node = nodes[c];
        let v = x[base + node.feature];
        if (holds(node, v) || ((node.flags & 16u) != 0u && is_nan(v))) {
            c = node.yes;
        } else {
            c = node.no;
        }
    }
    return c & ~LEAF;
}

// Adds value `v` to score `s` (whose has-flag is `has`) as the aggregate says.
fn combine(s: f32, has: bool, v: f32) -> f32 {
    switch params.aggregate {
        case 1u: { if (!has || v < s) { return v; } return s; }
        case 2u: { if (!has || v > s) { return v; } return s; }
        default: { return s + v; }
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.y * params.stride + gid.x;
    if (r >= params.rows) {
        return;
    }
    let base = (params.row_offset + r) * params.width;
    if (params.leaf_mode == 1u) {
        for (var t = 0u; t < params.n_trees; t++) {
            out[r * params.n_trees + t] = leaf_of(t, base);
        }
        return;
    }
    let n = params.n_targets;
    let flags = params.rows * n;
    if (n == 1u) {
        // One target: each leaf's first weight, whatever its target id.
        var s = 0.0;
        var has = false;
        for (var t = 0u; t < params.n_trees; t++) {
            let w = weights[leaves[leaf_of(t, base)].x];
            s = combine(s, has, bitcast<f32>(w.y));
            has = has || params.aggregate != 0u;
        }
        out[r] = bitcast<u32>(s);
        out[flags + r] = select(0u, 1u, has);
        return;
    }
    for (var k = 0u; k < n; k++) {
        out[r * n + k] = 0u;
        out[flags + r * n + k] = 0u;
    }
    for (var t = 0u; t < params.n_trees; t++) {
        let leaf = leaves[leaf_of(t, base)];
        for (var i = 0u; i < leaf.y; i++) {
            let w = weights[leaf.x + i];
            let at = r * n + w.x;
            let has = out[flags + at] != 0u;
            out[at] = bitcast<u32>(combine(bitcast<f32>(out[at]), has, bitcast<f32>(w.y)));
            out[flags + at] = 1u;
        }
    }
}
