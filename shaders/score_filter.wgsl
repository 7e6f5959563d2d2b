// two_tower scoring, the arithmetic half of top-K: a tiled matrix product of
// user vectors [users, dim] and one round of items (columns item_start ..
// item_end of an item tile, stored transposed [dim, tile_len]), whose scores
// are compared at once with each user's current K-th best candidate (in
// `state`, kept by topk.wgsl). Only a score that beats it can enter the top
// K, so only those are written out, to the user's candidate list; the user x
// item score matrix is never stored. Once a few thousand items have been
// seen, few items beat the K-th best, so a round writes little.
//
// The candidate count may pass `cap`: the count goes on rising, nothing more
// is written, and topk.wgsl then rescans that user's round directly (exact,
// slower). On a first round (`first` = 1) there is no K-th best yet and every
// item is a candidate.
//
// The product is tiled as in dense.wgsl: 128 users x 128 items per
// workgroup, 8 x 8 per invocation, BK dims staged at a time.

struct Params {
    users: u32,
    dim: u32,
    tile_len: u32,
    // The tile's first embedding row in the whole catalogue (exclude_seen
    // compares catalogue rows).
    tile_start: u32,
    item_start: u32,
    item_end: u32,
    // The K-th best candidate (index k - 1 of the user's sorted kept list)
    // is the bar.
    k: u32,
    kp: u32,
    exclude_seen: u32,
    user_stride: u32,
    cap: u32,
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
@group(0) @binding(2) var<storage, read> emb: array<f32>;
@group(0) @binding(3) var<storage, read> item_ids: array<u32>;
@group(0) @binding(4) var<storage, read> seen_offsets: array<u32>;
@group(0) @binding(5) var<storage, read> seen_rows: array<u32>;
@group(0) @binding(6) var<storage, read> state: array<Entry>;
@group(0) @binding(7) var<storage, read_write> counts: array<atomic<u32>>;
@group(0) @binding(8) var<storage, read_write> cands: array<Candidate>;

const BM: u32 = 128u;
const BK: u32 = 16u;
const LD: u32 = 33u;
const PER: u32 = BM * BK / 256u;

var<workgroup> su: array<vec4<f32>, BK * LD>;
var<workgroup> si: array<vec4<f32>, BK * LD>;

// Whether entry a goes before entry b (the order of topk.wgsl).
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

// Offers scores of user u for the four items j .. j + 3 of the tile.
fn offer(u: u32, j: u32, s: vec4<f32>) {
    if (u >= p.users) {
        return;
    }
    var bar = Entry(0.0, 0u, 0u);
    if (p.first == 0u) {
        bar = state[u * p.kp + p.k - 1u];
    }
    for (var c = 0u; c < 4u; c++) {
        let jj = j + c;
        if (jj < p.item_end) {
            let score = s[c];
            // A cheap test first: most scores lose on the score alone.
            if (bar.ok == 0u || score >= bar.score) {
                let id = item_ids[jj];
                if (before(score, id, 1u, bar.score, bar.id, bar.ok)
                    && (p.exclude_seen == 0u || !seen(u, p.tile_start + jj))) {
                    let slot = atomicAdd(&counts[u], 1u);
                    if (slot < p.cap) {
                        cands[u * p.cap + slot] = Candidate(score, id);
                    }
                }
            }
        }
    }
}

fn load_slice(
    ur: ptr<function, array<f32, PER>>,
    ir: ptr<function, array<f32, PER>>,
    user0: u32,
    item0: u32,
    k0: u32,
    li: u32,
) {
    for (var e = 0u; e < PER; e++) {
        let idx = li + 256u * e;
        // Users: neighbouring invocations read neighbouring dims of a user.
        let r = idx / BK;
        let k = k0 + idx % BK;
        var uv = 0.0;
        if (user0 + r < p.users && k < p.dim) {
            uv = user_vecs[(user0 + r) * p.user_stride + k];
        }
        (*ur)[e] = uv;
        // Items: neighbouring invocations read neighbouring items of a dim.
        let c = idx % BM;
        let ki = k0 + idx / BM;
        var iv = 0.0;
        if (item0 + c < p.item_end && ki < p.dim) {
            iv = emb[ki * p.tile_len + item0 + c];
        }
        (*ir)[e] = iv;
    }
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let tx = li % 16u;
    let ty = li / 16u;
    let user0 = wg.y * BM;
    let item0 = p.item_start + wg.x * BM;

    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);

    var ur: array<f32, PER>;
    var ir: array<f32, PER>;
    load_slice(&ur, &ir, user0, item0, 0u, li);
    for (var k0 = 0u; k0 < p.dim; k0 += BK) {
        for (var e = 0u; e < PER; e++) {
            let idx = li + 256u * e;
            let r = idx / BK;
            let k = idx % BK;
            su[k * LD + r / 4u][r % 4u] = ur[e];
            let c = idx % BM;
            let ki = idx / BM;
            si[ki * LD + c / 4u][c % 4u] = ir[e];
        }
        workgroupBarrier();
        if (k0 + BK < p.dim) {
            load_slice(&ur, &ir, user0, item0, k0 + BK, li);
        }
        for (var k = 0u; k < BK; k++) {
            let a0 = su[k * LD + ty];
            let a1 = su[k * LD + 16u + ty];
            let b0 = si[k * LD + tx];
            let b1 = si[k * LD + 16u + tx];
            c00 = fma(vec4<f32>(a0.x), b0, c00);
            c01 = fma(vec4<f32>(a0.x), b1, c01);
            c10 = fma(vec4<f32>(a0.y), b0, c10);
            c11 = fma(vec4<f32>(a0.y), b1, c11);
            c20 = fma(vec4<f32>(a0.z), b0, c20);
            c21 = fma(vec4<f32>(a0.z), b1, c21);
            c30 = fma(vec4<f32>(a0.w), b0, c30);
            c31 = fma(vec4<f32>(a0.w), b1, c31);
            c40 = fma(vec4<f32>(a1.x), b0, c40);
            c41 = fma(vec4<f32>(a1.x), b1, c41);
            c50 = fma(vec4<f32>(a1.y), b0, c50);
            c51 = fma(vec4<f32>(a1.y), b1, c51);
            c60 = fma(vec4<f32>(a1.z), b0, c60);
            c61 = fma(vec4<f32>(a1.z), b1, c61);
            c70 = fma(vec4<f32>(a1.w), b0, c70);
            c71 = fma(vec4<f32>(a1.w), b1, c71);
        }
        workgroupBarrier();
    }

    let ua = user0 + 4u * ty;
    let ub = user0 + 64u + 4u * ty;
    let ja = item0 + 4u * tx;
    let jb = item0 + 64u + 4u * tx;
    offer(ua, ja, c00);
    offer(ua, jb, c01);
    offer(ua + 1u, ja, c10);
    offer(ua + 1u, jb, c11);
    offer(ua + 2u, ja, c20);
    offer(ua + 2u, jb, c21);
    offer(ua + 3u, ja, c30);
    offer(ua + 3u, jb, c31);
    offer(ub, ja, c40);
    offer(ub, jb, c41);
    offer(ub + 1u, ja, c50);
    offer(ub + 1u, jb, c51);
    offer(ub + 2u, ja, c60);
    offer(ub + 2u, jb, c61);
    offer(ub + 3u, ja, c70);
    offer(ub + 3u, jb, c71);
}
