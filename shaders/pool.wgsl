// History pooling for two_tower: out[u] = [mean of the history items'
// embeddings, then the user's features]. The host has already capped each
// history to its last max_history entries and mapped item ids to embedding
// rows (ids missing from the catalogue dropped), so `n` below is the count
// that divides. The embeddings may be split into tiles of rows
// [tile_start, tile_start + tile_len): one dispatch per tile adds that tile's
// share of the mean; the first tile also writes the features.
// One invocation per (user, output column).

struct Params {
    users: u32,
    dim: u32,
    num_features: u32,
    tile_start: u32,
    tile_len: u32,
    first_tile: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// The tile's embeddings, transposed (as the top-K kernel reads them):
// emb[c * tile_len + j] is dimension c of the tile's item j.
@group(0) @binding(1) var<storage, read> emb: array<f32>;
@group(0) @binding(2) var<storage, read> offsets: array<u32>;
@group(0) @binding(3) var<storage, read> hist_rows: array<u32>;
@group(0) @binding(4) var<storage, read> features: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let u = gid.y;
    let stride = p.dim + p.num_features;
    if (c >= stride || u >= p.users) {
        return;
    }
    let o = u * stride + c;
    if (c >= p.dim) {
        if (p.first_tile == 1u) {
            out[o] = features[u * p.num_features + (c - p.dim)];
        }
        return;
    }
    var acc = 0.0;
    if (p.first_tile == 0u) {
        acc = out[o];
    }
    let a = offsets[u];
    let e = offsets[u + 1u];
    if (e > a) {
        var s = 0.0;
        for (var j = a; j < e; j++) {
            let r = hist_rows[j];
            if (r >= p.tile_start && r - p.tile_start < p.tile_len) {
                s += emb[c * p.tile_len + (r - p.tile_start)];
            }
        }
        acc += s / f32(e - a);
    }
    out[o] = acc;
}
