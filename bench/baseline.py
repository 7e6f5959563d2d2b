#!/usr/bin/env python3
"""The pipeline a user would write instead of herd, in Python.

Reads the same Parquet and safetensors files `herd gen` writes, computes the
same outputs with onnxruntime (dense layers, scoring and top-K in one ONNX
graph; two_tower history pooling in numpy, since histories are ragged) or
with numpy alone, writes them to LMDB in herd's value layout, and optionally
checks a sample of them against a herd store.

    pip install -r bench/requirements.txt
    python3 bench/baseline.py mlp --data DIR --out LMDB_DIR --threads 2
    python3 bench/baseline.py two-tower --data DIR --out LMDB_DIR --top-k 100 \\
        --max-history 500 --exclude-seen --check-store STORE --check-version N
    python3 bench/baseline.py gbdt --data DIR --out LMDB_DIR --threads 2

Ids are the integer id columns `herd gen` writes (entity_id, user_id); the
features are every other column but the history, in file order.

Prints one JSON object (also written to --json FILE): seconds spent reading,
building the graph, computing (best of --repeat passes), writing, the whole
pipeline run once (total_s: from the imports to the LMDB sync, without the
check and the repeated passes), and the check's result.
Exits 1 when the check finds a disagreement, 2 on bad input.
"""

import argparse
import json
import os
import re
import sys
import time

T_START = time.perf_counter()

# numpy's BLAS reads its thread count when it loads: the same as --threads.
_THREADS = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), "2")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

# Rows per onnxruntime call for mlp, and users per call for two_tower (a
# two_tower call holds users x items f32 scores: 256 x 100k is 100 MiB).
MLP_BATCH_ROWS = 16384
TWO_TOWER_BATCH_USERS = 256
# herd's value layout (src/store/value.rs): 16-byte header, little endian.
VALUE_FORMAT = 1
KIND_SCORES = 0
KIND_TOP_K = 1
# Agreement tolerances: sigmoid outputs, and top-K scores (dot products of
# dim-64 vectors, summed in a different order by each stack).
MLP_ATOL = 1e-5
TOPK_ATOL = 1e-3
TOPK_RTOL = 1e-4
# The LMDB map this pipeline asks for; it fails loudly past this size.
LMDB_MAP_SIZE = 8 << 30


def fail(msg, code=2):
    print(f"baseline.py: {msg}", file=sys.stderr)
    sys.exit(code)


def data_files(kind, data_dir):
    if kind == "gbdt":
        return os.path.join(data_dir, "entities.parquet"), os.path.join(data_dir, "gbdt.onnx")
    if kind == "mlp":
        return os.path.join(data_dir, "entities.parquet"), os.path.join(data_dir, "mlp.safetensors")
    return os.path.join(data_dir, "users.parquet"), os.path.join(data_dir, "two_tower.safetensors")


def layer_names(tensors, prefix):
    """Every PREFIX*.weight with a matching bias, ordered by the numbers in
    their names (as nn.Sequential writes them) -- herd's default rule."""
    names = [
        k[len(prefix) : -len(".weight")]
        for k in tensors
        if k.startswith(prefix) and k.endswith(".weight") and k[: -len(".weight")] + ".bias" in tensors
    ]

    def natural(name):
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]

    return [prefix + n for n in sorted(names, key=natural)]


def read_input(path, id_column, history_column):
    table = pq.read_table(path)
    ids = table.column(id_column).to_numpy()
    skip = {id_column, history_column}
    feats = [c for c in table.column_names if c not in skip]
    x = np.empty((table.num_rows, len(feats)), dtype=np.float32)
    for j, c in enumerate(feats):
        x[:, j] = table.column(c).to_numpy()
    offsets = values = None
    if history_column:
        hist = table.column(history_column).combine_chunks()
        offsets = hist.offsets.to_numpy().astype(np.int64)
        values = hist.values.to_numpy()
    return ids, x, offsets, values


def session(graph, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(graph.SerializeToString(), so, providers=["CPUExecutionProvider"])


def dense_nodes(helper, numpy_helper, tensors, names, x, inits, nodes, final_relu=False):
    for n, name in enumerate(names):
        w, b = tensors[name + ".weight"], tensors[name + ".bias"]
        inits += [numpy_helper.from_array(w, name + ".w"), numpy_helper.from_array(b, name + ".b")]
        y = name + ".y"
        nodes.append(helper.make_node("Gemm", [x, name + ".w", name + ".b"], [y], transB=1))
        x = y
        if n + 1 < len(names) or final_relu:
            nodes.append(helper.make_node("Relu", [x], [x + ".relu"]))
            x = x + ".relu"
    return x


def mlp_graph(tensors, names, num_features):
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []
    y = dense_nodes(helper, numpy_helper, tensors, names, "x", inits, nodes)
    nodes.append(helper.make_node("Sigmoid", [y], ["out"]))
    width = tensors[names[-1] + ".weight"].shape[0]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", num_features])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", width])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def two_tower_graph(tensors, names, in_dim, k):
    """Tower, scores against every item, seen items masked to -inf, top K."""
    from onnx import TensorProto, helper, numpy_helper

    emb = tensors["item_embeddings"]
    inits, nodes = [], []
    u = dense_nodes(helper, numpy_helper, tensors, names, "x", inits, nodes) if names else "x"
    inits.append(numpy_helper.from_array(np.ascontiguousarray(emb.T), "item_embeddings_t"))
    inits.append(numpy_helper.from_array(np.array([k], dtype=np.int64), "k"))
    nodes += [
        helper.make_node("MatMul", [u, "item_embeddings_t"], ["scores"]),
        helper.make_node("ScatterND", ["scores", "seen", "neg_inf"], ["masked"]),
        helper.make_node("TopK", ["masked", "k"], ["top_scores", "top_rows"], axis=-1, largest=1, sorted=1),
    ]
    g = helper.make_graph(
        nodes,
        "two_tower",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", in_dim]),
            helper.make_tensor_value_info("seen", TensorProto.INT64, ["m", 2]),
            helper.make_tensor_value_info("neg_inf", TensorProto.FLOAT, ["m"]),
        ],
        [
            helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, ["b", k]),
            helper.make_tensor_value_info("top_rows", TensorProto.INT64, ["b", k]),
        ],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def numpy_layers(tensors, names, x):
    for n, name in enumerate(names):
        x = x @ tensors[name + ".weight"].T + tensors[name + ".bias"]
        if n + 1 < len(names):
            np.maximum(x, 0, out=x)
    return x


def header(kind, count, version, timestamp, ttl):
    return np.array([VALUE_FORMAT, kind], dtype=np.uint8).tobytes() + np.array(
        [count], dtype="<u2"
    ).tobytes() + np.array([version, timestamp, ttl], dtype="<u4").tobytes()


def write_lmdb(out, version, ids, values, ttl):
    """One database per version, `v{N}`, keyed by the id (u64 BE), as herd's
    store lays it out (src/store/mod.rs); one write transaction."""
    import lmdb

    env = lmdb.open(out, map_size=LMDB_MAP_SIZE, max_dbs=2)
    db = env.open_db(f"v{version}".encode())
    # Sorted by id, one row per id: the last row of a repeated id wins, as in herd.
    _, last = np.unique(ids[::-1], return_index=True)
    order = len(ids) - 1 - last
    key_bytes = ids.astype(">u8").view(np.uint8).reshape(len(ids), 8)
    with env.begin(write=True, db=db) as txn:
        # A rerun into the same directory replaces that version's rows.
        txn.drop(db, delete=False)
        cur = txn.cursor()
        cur.putmulti(((key_bytes[i].tobytes(), values[i]) for i in order), append=True)
    env.sync()
    env.close()


def encode_scores(out, version, ts, ttl):
    n, width = out.shape
    h = np.frombuffer(header(KIND_SCORES, width, version, ts, ttl), dtype=np.uint8)
    buf = np.empty((n, 16 + 4 * width), dtype=np.uint8)
    buf[:, :16] = h
    buf[:, 16:] = out.astype("<f4").view(np.uint8).reshape(n, 4 * width)
    return [r.tobytes() for r in buf]


def encode_topk(items, scores, counts, version, ts, ttl):
    vals = []
    for i in range(len(counts)):
        c = counts[i]
        pairs = np.empty((c, 2), dtype="<u4")
        pairs[:, 0] = items[i, :c]
        pairs[:, 1] = scores[i, :c].astype("<f4").view("<u4")
        vals.append(header(KIND_TOP_K, c, version, ts, ttl) + pairs.tobytes())
    return vals


def run_mlp(args, tensors, x, t):
    names = layer_names(tensors, "")
    if not names:
        fail(f"{args.weights}: no NAME.weight / NAME.bias pairs")
    if tensors[names[0] + ".weight"].shape[1] != x.shape[1]:
        fail(f"{args.weights}: first layer takes {tensors[names[0] + '.weight'].shape[1]} inputs, data has {x.shape[1]} features")
    if args.engine == "onnxruntime":
        sess = session(mlp_graph(tensors, names, x.shape[1]), args.threads)
    t["build_s"] = time.perf_counter() - t["_mark"]

    def once():
        if args.engine == "onnxruntime":
            return np.concatenate(
                [sess.run(["out"], {"x": x[s : s + MLP_BATCH_ROWS]})[0] for s in range(0, len(x), MLP_BATCH_ROWS)]
            )
        parts = []
        for s in range(0, len(x), MLP_BATCH_ROWS):
            y = numpy_layers(tensors, names, x[s : s + MLP_BATCH_ROWS])
            parts.append(1.0 / (1.0 + np.exp(-y)))
        return np.concatenate(parts).astype(np.float32)

    return timed(args, t, once)


def run_gbdt(args, x, t):
    """`herd gen gbdt`'s ONNX tree ensemble on onnxruntime: the probabilities."""
    if args.engine != "onnxruntime":
        fail("gbdt runs on onnxruntime only (numpy has no tree ensemble)")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.weights, so, providers=["CPUExecutionProvider"])
    t["build_s"] = time.perf_counter() - t["_mark"]

    def once():
        return np.concatenate(
            [
                sess.run(["probabilities"], {"input": x[s : s + MLP_BATCH_ROWS]})[0]
                for s in range(0, len(x), MLP_BATCH_ROWS)
            ]
        )

    return timed(args, t, once)


def timed(args, t, once):
    """Runs the model compute `args.repeat` times; keeps the best time."""
    passes = []
    for _ in range(max(1, args.repeat)):
        c0 = time.perf_counter()
        out = once()
        passes.append(time.perf_counter() - c0)
    t["compute_s"] = min(passes)
    # total_s counts the pipeline once: the passes after the first are taken out.
    t["_extra"] = sum(passes[1:])
    return out


def pool_all(emb, rows_of, offsets, values, max_history):
    """Mean embedding of each user's last `max_history` history entries found
    in the catalogue (zeros when none), as herd's fine print says."""
    n = len(offsets) - 1
    lens = np.diff(offsets)
    user = np.repeat(np.arange(n), lens)
    pos = np.arange(len(values)) - offsets[:-1][user]
    keep_start = np.maximum(lens - max_history, 0)
    rows = rows_of(values)
    keep = (pos >= keep_start[user]) & (rows >= 0)
    user_k, rows_k = user[keep], rows[keep]
    counts = np.bincount(user_k, minlength=n)
    pooled = np.zeros((n, emb.shape[1]), dtype=np.float32)
    nz = counts > 0
    if nz.any():
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[nz]
        sums = np.add.reduceat(emb[rows_k], starts, axis=0)
        pooled[nz] = sums / counts[nz, None].astype(np.float32)
    return pooled, user, rows


def run_two_tower(args, tensors, x, offsets, values, t):
    emb = tensors["item_embeddings"]
    items, dim = emb.shape
    item_ids = tensors.get("item_ids")
    item_ids = np.arange(items, dtype=np.int64) if item_ids is None else item_ids.astype(np.int64)
    sort = np.argsort(item_ids, kind="stable")
    sorted_ids = item_ids[sort]

    def rows_of(ids):
        pos = np.minimum(np.searchsorted(sorted_ids, ids), items - 1)
        return np.where(sorted_ids[pos] == ids, sort[pos], -1)

    names = layer_names(tensors, "user_tower.")
    k = min(args.top_k, items)
    sess = None
    if args.engine == "onnxruntime":
        sess = session(two_tower_graph(tensors, names, dim + x.shape[1], k), args.threads)
    t["build_s"] = time.perf_counter() - t["_mark"]
    return timed(args, t, lambda: two_tower_once(args, tensors, sess, names, emb, item_ids, rows_of, k, x, offsets, values))


def two_tower_once(args, tensors, sess, names, emb, item_ids, rows_of, k, x, offsets, values):
    items = emb.shape[0]
    n = len(offsets) - 1
    pooled, user, rows = pool_all(emb, rows_of, offsets, values, args.max_history)
    xin = np.concatenate([pooled, x], axis=1) if names else pooled
    top_items = np.empty((n, k), dtype=np.uint32)
    top_scores = np.empty((n, k), dtype=np.float32)
    counts = np.full(n, k, dtype=np.int64)
    for s in range(0, n, TWO_TOWER_BATCH_USERS):
        e = min(n, s + TWO_TOWER_BATCH_USERS)
        b = e - s
        if args.exclude_seen:
            # The whole history, not only the capped part; ids outside the catalogue are skipped.
            su, sr = user[offsets[s] : offsets[e]], rows[offsets[s] : offsets[e]]
            flat = np.unique((su[sr >= 0] - s) * items + sr[sr >= 0])
            seen = np.stack([flat // items, flat % items], axis=1).astype(np.int64)
        else:
            seen = np.zeros((0, 2), dtype=np.int64)
        if args.engine == "onnxruntime":
            sc, rw = sess.run(
                ["top_scores", "top_rows"],
                {"x": xin[s:e], "seen": seen, "neg_inf": np.full(len(seen), -np.inf, dtype=np.float32)},
            )
        else:
            u = numpy_layers(tensors, names, xin[s:e]) if names else xin[s:e]
            scores = u @ emb.T
            scores[seen[:, 0], seen[:, 1]] = -np.inf
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < items else np.tile(np.arange(items), (b, 1))
            ps = np.take_along_axis(scores, part, axis=1)
            # Best first; ties by the smaller row (item ids grow with the row here).
            o = np.lexsort((part, -ps), axis=1)
            rw, sc = np.take_along_axis(part, o, axis=1), np.take_along_axis(ps, o, axis=1)
        counts[s:e] = (sc > -np.inf).sum(axis=1)
        top_scores[s:e] = sc
        top_items[s:e] = item_ids[rw].astype(np.uint32)
    return top_items, top_scores, counts


def decode(value):
    kind, count = value[1], int.from_bytes(value[2:4], "little")
    if kind == KIND_SCORES:
        return "scores", np.frombuffer(value, dtype="<f4", count=count, offset=16)
    pairs = np.frombuffer(value, dtype="<u4", count=2 * count, offset=16).reshape(count, 2)
    return "topk", (pairs[:, 0].copy(), pairs[:, 1].copy().view("<f4"))


def check(args, ids, mine):
    """Compares `mine` (id -> ("scores", array) or ("topk", (items, scores)))
    with herd's store for a sample of ids. Returns the check's summary."""
    import lmdb

    env = lmdb.open(args.check_store, readonly=True, lock=False, max_dbs=4)
    try:
        db = env.open_db(f"v{args.check_version}".encode(), create=False)
    except lmdb.NotFoundError:
        fail(f"herd store {args.check_store} has no database v{args.check_version}: is that the version its run report names?")
    rng = np.random.default_rng(0)
    sample = rng.choice(len(ids), size=min(args.sample, len(ids)), replace=False)
    missing, bad, exact, worst = [], [], 0, 0.0
    with env.begin(db=db) as txn:
        for i in sample:
            key = np.array([ids[i]], dtype=">u8").tobytes()
            v = txn.get(key)
            if v is None:
                missing.append(int(ids[i]))
                continue
            kind, theirs = decode(v)
            kind_m, ours = mine(i)
            if kind == "scores":
                d = float(np.max(np.abs(theirs - ours))) if len(theirs) else 0.0
                worst = max(worst, d)
                if len(theirs) != len(ours) or d > MLP_ATOL:
                    bad.append((int(ids[i]), f"scores differ by {d:.2e} (> {MLP_ATOL})"))
                else:
                    exact += 1
                continue
            (hi, hs), (oi, os_) = theirs, ours
            if len(hi) != len(oi):
                bad.append((int(ids[i]), f"herd has {len(hi)} items, baseline {len(oi)}"))
                continue
            d = float(np.max(np.abs(hs - os_))) if len(hs) else 0.0
            worst = max(worst, d)
            tol = TOPK_ATOL + TOPK_RTOL * float(np.max(np.abs(hs))) if len(hs) else 0.0
            if d > tol:
                bad.append((int(ids[i]), f"rank-wise scores differ by {d:.2e} (> {tol:.2e})"))
                continue
            if np.array_equal(hi, oi):
                exact += 1
                continue
            # Items may differ only where scores tie within rounding at the K-th place.
            boundary = hs[-1] + tol
            diff = set(hi.tolist()) ^ set(oi.tolist())
            by_item = dict(zip(hi.tolist(), hs.tolist())) | dict(zip(oi.tolist(), os_.tolist()))
            if any(by_item[it] > boundary for it in diff):
                bad.append((int(ids[i]), f"top-K item sets differ above the K-th score: {sorted(diff)[:6]}"))
    env.close()
    return {
        "store": args.check_store,
        "version": args.check_version,
        "sampled": len(sample),
        "identical": exact,
        "missing": missing[:10],
        "missing_count": len(missing),
        "disagree": bad[:10],
        "disagree_count": len(bad),
        "max_abs_diff": worst,
        "ok": not missing and not bad,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", choices=["mlp", "two-tower", "gbdt"])
    p.add_argument("--data", required=True, help="the directory `herd gen` wrote")
    p.add_argument("--out", required=True, help="LMDB directory to write (created)")
    p.add_argument("--engine", choices=["onnxruntime", "numpy"], default="onnxruntime")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--max-history", type=int, default=500)
    p.add_argument("--exclude-seen", action="store_true")
    p.add_argument("--version", type=int, default=1, help="version number: the database name and the values' model_ref")
    p.add_argument("--ttl", type=int, default=7 * 86400)
    p.add_argument("--check-store", help="a herd store directory to compare with")
    p.add_argument("--check-version", type=int, help="the herd version to compare with")
    p.add_argument("--sample", type=int, default=1000, help="rows compared with the herd store")
    p.add_argument("--repeat", type=int, default=1, help="model compute passes; the best is reported")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()
    if args.check_store and args.check_version is None:
        fail("--check-store needs --check-version (the version in herd's run report)")

    data, args.weights = data_files(args.model, args.data)
    for f in (data, args.weights):
        if not os.path.exists(f):
            fail(f"{f} not found: write it with `herd gen {args.model} --out {args.data}`")
    t = {}
    r0 = time.perf_counter()
    tensors = load_file(args.weights) if args.model != "gbdt" else None
    if args.model in ("mlp", "gbdt"):
        ids, x, _, _ = read_input(data, "entity_id", None)
    else:
        ids, x, offsets, values = read_input(data, "user_id", "history")
    t["read_s"] = time.perf_counter() - r0
    t["_mark"] = time.perf_counter()

    ts = int(time.time())
    if args.model in ("mlp", "gbdt"):
        out = run_mlp(args, tensors, x, t) if args.model == "mlp" else run_gbdt(args, x, t)
        w0 = time.perf_counter()
        vals = encode_scores(out, args.version, ts, args.ttl)

        def mine(i):
            return "scores", out[i]
    else:
        items, scores, counts = run_two_tower(args, tensors, x, offsets, values, t)
        w0 = time.perf_counter()
        vals = encode_topk(items, scores, counts, args.version, ts, args.ttl)

        def mine(i):
            return "topk", (items[i, : counts[i]], scores[i, : counts[i]])

    write_lmdb(args.out, args.version, ids, vals, args.ttl)
    t["write_s"] = time.perf_counter() - w0
    t["total_s"] = time.perf_counter() - T_START - t.pop("_extra")
    del t["_mark"]

    if args.engine == "onnxruntime":
        import onnxruntime

        engine_version = onnxruntime.__version__
    else:
        engine_version = np.__version__
    result = {
        "model": args.model.replace("-", "_"),
        "engine": args.engine,
        "engine_version": engine_version,
        "threads": args.threads,
        "rows": int(len(ids)),
        "data": os.path.abspath(data),
        "weights": os.path.abspath(args.weights),
        "top_k": args.top_k,
        "max_history": args.max_history,
        "exclude_seen": args.exclude_seen,
        "repeat": args.repeat,
        **{k: round(v, 4) for k, v in t.items()},
        "compute_rows_per_s": len(ids) / t["compute_s"],
    }
    if args.check_store:
        result["check"] = check(args, ids, mine)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    if args.check_store and not result["check"]["ok"]:
        c = result["check"]
        fail(
            f"{c['disagree_count']} of {c['sampled']} sampled rows disagree with herd store "
            f"{c['store']} version {c['version']} and {c['missing_count']} are missing there; "
            f"first: {c['disagree'][:3] or c['missing'][:3]}",
            code=1,
        )


if __name__ == "__main__":
    main()
