// Scoring fused with top-K selection for two_tower. One workgroup per user.
//
// The item embeddings come in tiles of rows [tile_start, tile_start + tile_len)
// (one dispatch per tile). Each user's best `kp` candidates so far live in
// `state`; a dispatch loads them into the first half of a workgroup buffer,
// then for every run of `kp` items of the tile scores them into the second
// half and, when one of them beats the worst kept candidate, bitonic-sorts all
// 2 * kp entries, keeping the best `kp` in front.
// Scores never leave the workgroup, so the user x item matrix is never stored.
//
// Order: a valid entry before an invalid one, then the higher score, then the
// smaller item id (the tie rule every backend shares).

struct Params {
    users: u32,
    dim: u32,
    tile_start: u32,
    tile_len: u32,
    // A power of two >= top_k, at most BUF / 2.
    kp: u32,
    first_tile: u32,
    exclude_seen: u32,
    // Floats between consecutive user vectors in `user_vecs`.
    user_stride: u32,
}

struct Entry {
    score: f32,
    id: u32,
    ok: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> user_vecs: array<f32>;
@group(0) @binding(2) var<storage, read> emb: array<f32>;
@group(0) @binding(3) var<storage, read> item_ids: array<u32>;
// seen_rows[seen_offsets[u]..seen_offsets[u + 1]]: embedding rows of user u's
// whole history, sorted ascending.
@group(0) @binding(4) var<storage, read> seen_offsets: array<u32>;
@group(0) @binding(5) var<storage, read> seen_rows: array<u32>;
@group(0) @binding(6) var<storage, read_write> state: array<Entry>;

const BUF: u32 = 1024u;
const WG: u32 = 256u;

var<workgroup> s_score: array<f32, 1024>;
var<workgroup> s_id: array<u32, 1024>;
var<workgroup> s_ok: array<u32, 1024>;
// Set when a run of items holds a candidate better than the worst kept one;
// a run without one skips the sort.
var<workgroup> s_any: atomic<u32>;
var<workgroup> s_flag: u32;

fn better(a: u32, b: u32) -> bool {
    if (s_ok[a] != s_ok[b]) {
        return s_ok[a] == 1u;
    }
    if (s_ok[a] == 0u) {
        return false;
    }
    if (s_score[a] != s_score[b]) {
        return s_score[a] > s_score[b];
    }
    return s_id[a] < s_id[b];
}

fn seen(u: u32, row: u32) -> bool {
    var lo = seen_offsets[u];
    var hi = seen_offsets[u + 1u];
    while (lo < hi) {
        let mid = lo + (hi - lo) / 2u;
        let v = seen_rows[mid];
        if (v == row) {
            return true;
        }
        if (v < row) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return false;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let u = wg.x;
    let kp = p.kp;
    let n2 = 2u * kp;
    if (lid == 0u) {
        atomicStore(&s_any, 0u);
    }
    for (var i = lid; i < kp; i += WG) {
        if (p.first_tile == 1u) {
            s_ok[i] = 0u;
            s_score[i] = 0.0;
            s_id[i] = 0u;
        } else {
            let e = state[u * kp + i];
            s_score[i] = e.score;
            s_id[i] = e.id;
            s_ok[i] = e.ok;
        }
    }
    workgroupBarrier();
    for (var base = 0u; base < p.tile_len; base += kp) {
        for (var i = lid; i < kp; i += WG) {
            let j = base + i;
            var ok = 0u;
            var score = 0.0;
            var id = 0u;
            if (j < p.tile_len) {
                let row = p.tile_start + j;
                if (p.exclude_seen == 0u || !seen(u, row)) {
                    for (var d = 0u; d < p.dim; d++) {
                        score += user_vecs[u * p.user_stride + d] * emb[j * p.dim + d];
                    }
                    ok = 1u;
                    id = item_ids[j];
                }
            }
            s_score[kp + i] = score;
            s_id[kp + i] = id;
            s_ok[kp + i] = ok;
            if (better(kp + i, kp - 1u)) {
                atomicOr(&s_any, 1u);
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            s_flag = atomicLoad(&s_any);
            atomicStore(&s_any, 0u);
        }
        if (workgroupUniformLoad(&s_flag) == 0u) {
            continue;
        }
        for (var k = 2u; k <= n2; k <<= 1u) {
            for (var j = k >> 1u; j > 0u; j >>= 1u) {
                for (var i = lid; i < n2; i += WG) {
                    let l = i ^ j;
                    if (l > i) {
                        let descending = (i & k) == 0u;
                        var swap = false;
                        if (descending) {
                            swap = better(l, i);
                        } else {
                            swap = better(i, l);
                        }
                        if (swap) {
                            let ts = s_score[i];
                            s_score[i] = s_score[l];
                            s_score[l] = ts;
                            let ti = s_id[i];
                            s_id[i] = s_id[l];
                            s_id[l] = ti;
                            let to = s_ok[i];
                            s_ok[i] = s_ok[l];
                            s_ok[l] = to;
                        }
                    }
                }
                workgroupBarrier();
            }
        }
    }
    for (var i = lid; i < kp; i += WG) {
        state[u * kp + i] = Entry(s_score[i], s_id[i], s_ok[i]);
    }
}
