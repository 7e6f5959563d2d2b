// Scoring fused with top-K selection for two_tower. One workgroup per user.
//
// The item embeddings come in tiles of rows [tile_start, tile_start + tile_len)
// (one dispatch per tile). Each user's best `kp` candidates so far live in
// `state`; a dispatch loads them, sorted, into the front of a workgroup buffer.
// Items are then scored in rounds; an item that beats the worst kept
// candidate is appended behind the kept ones. When the buffer could not take
// another round (or the tile ends) kept and appended entries are
// bitonic-sorted together and the best `kp` stay in front. Most items beat
// nothing once the kept set is good, so sorting is rare, and scores never
// leave the workgroup: the user x item matrix is never stored.
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
// The tile's embeddings, transposed: emb[d * tile_len + j] is dimension d of
// the tile's item j, so neighbouring invocations read neighbouring floats.
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
// Entries appended behind the kept ones since the last sort.
var<workgroup> s_count: atomic<u32>;
var<workgroup> s_count_now: u32;

// Whether entry a goes before entry b.
fn before(sa: f32, ia: u32, oka: u32, sb: f32, ib: u32, okb: u32) -> bool {
    if (oka != okb) {
        return oka == 1u;
    }
    if (oka == 0u) {
        return false;
    }
    if (sa != sb) {
        return sa > sb;
    }
    return ia < ib;
}

fn better(a: u32, b: u32) -> bool {
    return before(s_score[a], s_id[a], s_ok[a], s_score[b], s_id[b], s_ok[b]);
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

// Sorts entries [0, n) best first; n is a power of two. Must be called by
// the whole workgroup.
fn sort(n: u32, lid: u32) {
    for (var k = 2u; k <= n; k <<= 1u) {
        for (var j = k >> 1u; j > 0u; j >>= 1u) {
            for (var i = lid; i < n; i += WG) {
                let l = i ^ j;
                if (l > i) {
                    var swap = false;
                    if ((i & k) == 0u) {
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

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let u = wg.x;
    let kp = p.kp;
    // Room behind the kept entries, and items scored per round (<= room).
    let room = BUF - kp;
    let round = max(kp, WG);
    if (lid == 0u) {
        atomicStore(&s_count, 0u);
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
    for (var base = 0u; base < p.tile_len; base += round) {
        // The worst kept entry: anything not before it cannot make the top kp.
        let w_score = s_score[kp - 1u];
        let w_id = s_id[kp - 1u];
        let w_ok = s_ok[kp - 1u];
        for (var i = lid; i < round; i += WG) {
            let j = base + i;
            if (j < p.tile_len) {
                let row = p.tile_start + j;
                if (p.exclude_seen == 0u || !seen(u, row)) {
                    var score = 0.0;
                    for (var d = 0u; d < p.dim; d++) {
                        score += user_vecs[u * p.user_stride + d] * emb[d * p.tile_len + j];
                    }
                    let id = item_ids[j];
                    if (before(score, id, 1u, w_score, w_id, w_ok)) {
                        let slot = kp + atomicAdd(&s_count, 1u);
                        s_score[slot] = score;
                        s_id[slot] = id;
                        s_ok[slot] = 1u;
                    }
                }
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            s_count_now = atomicLoad(&s_count);
        }
        let count = workgroupUniformLoad(&s_count_now);
        let last = base + round >= p.tile_len;
        if (count > 0u && (last || count + round > room)) {
            var n = 1u;
            while (n < kp + count) {
                n <<= 1u;
            }
            for (var i = kp + count + lid; i < n; i += WG) {
                s_ok[i] = 0u;
            }
            if (lid == 0u) {
                atomicStore(&s_count, 0u);
            }
            workgroupBarrier();
            sort(n, lid);
        }
    }
    for (var i = lid; i < kp; i += WG) {
        state[u * kp + i] = Entry(s_score[i], s_id[i], s_ok[i]);
    }
}
