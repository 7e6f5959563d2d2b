// two_tower top-K, the selection half: one workgroup per user keeps the
// user's best `kp` candidates so far, sorted, in `state`.
//
// Items come in rounds (columns item_start .. item_end of an item tile). For
// each round score_filter.wgsl has already written the items that beat the
// user's K-th best to the user's candidate list; here they are appended
// behind the kept entries in workgroup memory, bitonic-sorted together, and
// the best `kp` stay. When the list overflowed (more than `cap` candidates),
// the round's items are scored here instead, one item per
// invocation: an item that beats the K-th best is appended, and kept and
// appended entries are sorted whenever the buffer could not take another
// pass. Either way the first K entries of `state` are the exact top K of the
// items seen so far, and the candidate count is reset for the next round.
//
// Order: a valid entry before an invalid one, then the higher score, then the
// smaller item id (the tie rule every backend shares).

struct Params {
    users: u32,
    dim: u32,
    tile_len: u32,
    tile_start: u32,
    item_start: u32,
    item_end: u32,
    k: u32,
    // A power of two >= k, at most BUF / 2.
    kp: u32,
    exclude_seen: u32,
    // Floats between consecutive user vectors in `user_vecs`.
    user_stride: u32,
    cap: u32,
    // 1: nothing kept yet (the first round of a batch).
    first: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

struct Entry {
    score: f32,
    id: u32,
    ok: u32,
}

struct Candidate {
    score: f32,
    id: u32,
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
@group(0) @binding(7) var<storage, read_write> counts: array<u32>;
@group(0) @binding(8) var<storage, read> cands: array<Candidate>;

// Entries of the workgroup buffer; the host replaces this line with the
// largest power of two the adapter's workgroup memory holds.
const BUF: u32 = 1024u;
const WG: u32 = 256u;

var<workgroup> s_score: array<f32, BUF>;
var<workgroup> s_id: array<u32, BUF>;
var<workgroup> s_ok: array<u32, BUF>;
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

// Sorts the kept entries with the `count` appended behind them, so the best
// kp are in front. Must be called by the whole workgroup.
fn merge(count: u32, lid: u32) {
    let kp = p.kp;
    var n = 1u;
    while (n < kp + count) {
        n <<= 1u;
    }
    for (var i = kp + count + lid; i < n; i += WG) {
        s_ok[i] = 0u;
    }
    workgroupBarrier();
    sort(n, lid);
}

// Scores the round's items here: the exact path for a user whose candidate
// list overflowed. Must be called by the whole workgroup.
fn scan(u: u32, lid: u32) {
    let kp = p.kp;
    // Room behind the kept entries, and items scored per pass (<= room).
    let room = BUF - kp;
    let step = min(room, max(kp, WG));
    for (var base = p.item_start; base < p.item_end; base += step) {
        // The K-th best kept entry: anything not before it cannot make the
        // top K.
        let w_score = s_score[p.k - 1u];
        let w_id = s_id[p.k - 1u];
        let w_ok = s_ok[p.k - 1u];
        for (var i = lid; i < step; i += WG) {
            let j = base + i;
            if (j < p.item_end) {
                if (p.exclude_seen == 0u || !seen(u, p.tile_start + j)) {
                    var score = 0.0;
                    for (var d = 0u; d < p.dim; d++) {
                        score = fma(user_vecs[u * p.user_stride + d], emb[d * p.tile_len + j], score);
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
        let last = base + step >= p.item_end;
        if (count > 0u && (last || count + step > room)) {
            if (lid == 0u) {
                atomicStore(&s_count, 0u);
            }
            merge(count, lid);
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let u = wg.x;
    let kp = p.kp;
    if (lid == 0u) {
        atomicStore(&s_count, 0u);
        s_count_now = counts[u];
    }
    for (var i = lid; i < kp; i += WG) {
        if (p.first == 1u) {
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
    let listed = workgroupUniformLoad(&s_count_now);
    if (listed > p.cap) {
        scan(u, lid);
    } else if (listed > 0u) {
        for (var i = lid; i < listed; i += WG) {
            let c = cands[u * p.cap + i];
            s_score[kp + i] = c.score;
            s_id[kp + i] = c.id;
            s_ok[kp + i] = 1u;
        }
        merge(listed, lid);
    }
    workgroupBarrier();
    for (var i = lid; i < kp; i += WG) {
        state[u * kp + i] = Entry(s_score[i], s_id[i], s_ok[i]);
    }
    if (lid == 0u) {
        counts[u] = 0u;
    }
}
