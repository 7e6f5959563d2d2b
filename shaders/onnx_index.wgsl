// ONNX operators that move values without computing (src/gpu/onnx.rs):
// Gather, and a strided copy that Transpose and Concat are made of. Values
// are moved as u32 words, whatever their type. `m` holds the parameters.

@group(0) @binding(0) var<storage, read> m: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@group(0) @binding(3) var<storage, read> indices: array<i32>;
// Gather: the first entry of the indices out of range (atomicMin), or
// 0xffffffff when none was.
@group(0) @binding(4) var<storage, read_write> bad: array<atomic<u32>>;

const WG: u32 = 64u;
const MAX_RANK: u32 = 8u;

fn index_of(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WG;
}

// numpy's take along an axis of `src` seen as [outer, n, inner], with
// `count` indices (negative ones count from the end).
// m: [outer, n, inner, count].
@compute @workgroup_size(64, 1, 1)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    let n = m[1];
    let inner = m[2];
    let count = m[3];
    if (i >= m[0] * count * inner) {
        return;
    }
    let o = i / (count * inner);
    let rest = i % (count * inner);
    let j = rest / inner;
    var at = indices[j];
    if (at < 0) {
        at += i32(n);
    }
    if (at < 0 || at >= i32(n)) {
        atomicMin(&bad[0], j);
        dst[i] = 0u;
        return;
    }
    dst[i] = src[(o * n + u32(at)) * inner + rest % inner];
}

// For every index of `dims` (row-major): dst[dst_base + idx . dst_strides] =
// src[src_base + idx . src_strides].
// m: [rank, count, src_base, dst_base, dims[8], src strides[8], dst strides[8]].
@compute @workgroup_size(64, 1, 1)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index_of(gid, groups);
    if (i >= m[1]) {
        return;
    }
    let rank = m[0];
    var rest = i;
    var s = m[2];
    var d = m[3];
    for (var t = 0u; t < rank; t++) {
        let k = rank - 1u - t;
        let dim = m[4u + k];
        let idx = rest % dim;
        rest = rest / dim;
        s += idx * m[4u + MAX_RANK + k];
        d += idx * m[4u + 2u * MAX_RANK + k];
    }
    dst[d] = src[s];
}
