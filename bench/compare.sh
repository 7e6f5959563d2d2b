#!/usr/bin/env bash
# herd against the Python pipeline a user would write instead
# (bench/baseline.py: onnxruntime + numpy + lmdb), on the same files, in the
# same session, with the same thread count, and a table of the times.
#
#   pip install -r bench/requirements.txt
#   bench/compare.sh                 # smaller sizes (a few minutes on 2 cores)
#   bench/compare.sh --full          # the issue's sizes: mlp 1M x 64,
#                                    # two_tower 20k users x 100k items, dim 64, K 100,
#                                    # gbdt 1M rows x 100 features, 500 trees of depth 8
#   bench/compare.sh --mlp-rows N --users N --items N --repeat N --engine numpy --keep DIR
#   bench/compare.sh --full --only gbdt   # some of the models: mlp, tt, gbdt (comma-separated)
#   bench/compare.sh --herd PATH          # this herd binary instead of building one
#
# herd runs as `herd run` on a job file written here, on one local host with
# 1 slot x 2 threads, device cpu (the native path). The baseline runs with
# onnxruntime's intra-op pool at 2 threads. Model compute time is the best of
# --repeat passes over the whole input on each side (herd: `herd bench compute
# --baseline`, which loads the very files the baseline scored); end to end is
# the best of --repeat runs of each whole pipeline (read, compute, write;
# herd also validates and flips), the two taking turns. Agreement is checked on a sample of rows read back from herd's
# store. Exits non-zero when a step fails or the outputs disagree.
set -euo pipefail

MLP_ROWS=200000
GBDT_ROWS=100000
USERS=5000
ITEMS=100000
DIM=64
TOP_K=100
MAX_HISTORY=500
THREADS=2
REPEAT=3
ENGINE=onnxruntime
KEEP=""
MODELS="mlp tt gbdt"
HERD_GIVEN=""

while [ $# -gt 0 ]; do
    case "$1" in
        --full) MLP_ROWS=1000000; GBDT_ROWS=1000000; USERS=20000; ITEMS=100000; shift ;;
        --gbdt-rows) GBDT_ROWS="$2"; shift 2 ;;
        --mlp-rows) MLP_ROWS="$2"; shift 2 ;;
        --users) USERS="$2"; shift 2 ;;
        --items) ITEMS="$2"; shift 2 ;;
        --repeat) REPEAT="$2"; shift 2 ;;
        --engine) ENGINE="$2"; shift 2 ;;
        --keep) KEEP="$2"; shift 2 ;;
        --only) MODELS="$(echo "$2" | tr ',' ' ')"; shift 2 ;;
        --herd) HERD_GIVEN="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
for m in $MODELS; do
    case "$m" in mlp|tt|gbdt) ;; *) echo "compare.sh: --only takes mlp, tt and gbdt, not '$m'" >&2; exit 2 ;; esac
done
wants() { case " $MODELS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import numpy, pyarrow, safetensors, onnx, onnxruntime, lmdb" 2>/dev/null; then
    echo "compare.sh: $PY lacks the baseline's packages; install them with" >&2
    echo "  $PY -m pip install -r $ROOT/bench/requirements.txt" >&2
    exit 2
fi

if [ -n "$HERD_GIVEN" ]; then
    HERD="$(cd "$(dirname "$HERD_GIVEN")" && pwd)/$(basename "$HERD_GIVEN")"
    [ -x "$HERD" ] || { echo "compare.sh: --herd $HERD_GIVEN is not an executable" >&2; exit 2; }
else
    echo "== building herd (release)" >&2
    (cd "$ROOT" && cargo build --release --quiet)
    HERD="${CARGO_TARGET_DIR:-$ROOT/target}/release/herd"
    case "$HERD" in /*) ;; *) HERD="$ROOT/$HERD" ;; esac
fi

if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP"
    WORK="$(cd "$KEEP" && pwd)"
else
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
fi
cd "$WORK"
rm -rf store-mlp store-tt store-gbdt baseline-mlp baseline-tt baseline-gbdt

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "== generating data in $WORK" >&2
if wants mlp; then
    [ -f mlp/entities.parquet ] && [ "$(cat mlp/.size 2>/dev/null)" = "$MLP_ROWS" ] ||
        { "$HERD" gen mlp --out mlp --users "$MLP_ROWS" >&2 && echo "$MLP_ROWS" > mlp/.size; }
fi
if wants tt; then
    [ -f tt/users.parquet ] && [ "$(cat tt/.size 2>/dev/null)" = "$USERS $ITEMS $DIM" ] ||
        { "$HERD" gen two-tower --out tt --users "$USERS" --items "$ITEMS" --dim "$DIM" >&2 &&
          echo "$USERS $ITEMS $DIM" > tt/.size; }
fi
if wants gbdt; then
    [ -f gbdt/entities.parquet ] && [ "$(cat gbdt/.size 2>/dev/null)" = "$GBDT_ROWS" ] ||
        { "$HERD" gen gbdt --out gbdt --rows "$GBDT_ROWS" >&2 && echo "$GBDT_ROWS" > gbdt/.size; }
fi

cat > hosts.toml <<EOF
[[host]]
name = "local"
kind = "local"
slots = 1
threads = $THREADS
device = "cpu"
EOF
cat > mlp.toml <<EOF
[job]
name = "compare-mlp"
model_version = "compare-mlp"
hosts = "hosts.toml"
[input]
path = "mlp/entities.parquet"
id_column = "entity_id"
[model]
kind = "mlp"
weights = "mlp/mlp.safetensors"
output = "sigmoid"
[output]
store = "store-mlp"
EOF
cat > tt.toml <<EOF
[job]
name = "compare-two-tower"
model_version = "compare-two-tower"
hosts = "hosts.toml"
[input]
path = "tt/users.parquet"
id_column = "user_id"
history_column = "history"
[model]
kind = "two_tower"
weights = "tt/two_tower.safetensors"
top_k = $TOP_K
max_history = $MAX_HISTORY
exclude_seen = true
[output]
store = "store-tt"
EOF
cat > gbdt.toml <<EOF
[job]
name = "compare-gbdt"
model_version = "compare-gbdt"
hosts = "hosts.toml"
[input]
path = "gbdt/entities.parquet"
id_column = "entity_id"
[model]
kind = "onnx"
path = "gbdt/gbdt.onnx"
[output]
store = "store-gbdt"
EOF

now() { date +%s.%N; }
# Each timed step starts with the files of the steps before it on disk: the
# generated inputs (256 MB for the mlp) and the other side's store are
# still being written back when they end, and that writeback slowed the
# next step by up to a third on a 2-core machine with a slow disk.
settle() { sync; }

for m in $MODELS; do
    kind=$m; extra=()
    if [ "$m" = tt ]; then kind=two-tower
        extra=(--top-k "$TOP_K" --max-history "$MAX_HISTORY" --exclude-seen); fi
    # onnxruntime is the only engine with a tree ensemble.
    engine=$ENGINE; [ "$m" = gbdt ] && engine=onnxruntime
    # Each whole pipeline runs --repeat times, the two taking turns, each
    # run from a fresh store; the table keeps each side's best run, as it
    # keeps the best compute pass.
    walls=()
    for r in $(seq 1 "$REPEAT"); do
        echo "== herd run $m.toml (1 slot x $THREADS threads, cpu), run $r of $REPEAT" >&2
        rm -rf "store-$m"
        settle
        t0=$(now)
        "$HERD" run "$m.toml" --report "herd-$m-$r.json" > "herd-$m.log" 2>&1 ||
            { cat "herd-$m.log" >&2; echo "compare.sh: herd run $m.toml failed (log above)" >&2; exit 1; }
        t1=$(now)
        walls+=("$(awk "BEGIN { print $t1 - $t0 }")")
        version=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['version'])" "herd-$m-$r.json")
        echo "== bench/baseline.py $kind ($engine, $THREADS threads), run $r of $REPEAT, checked against herd v$version" >&2
        rm -rf "baseline-$m"
        settle
        # The compute passes are repeated in the first run only.
        passes=1; [ "$r" = 1 ] && passes=$REPEAT
        "$PY" "$ROOT/bench/baseline.py" "$kind" --data "$m" --out "baseline-$m" --engine "$engine" \
            --threads "$THREADS" --repeat "$passes" "${extra[@]}" \
            --check-store "store-$m" --check-version "$version" --json "baseline-$m-$r.json" > /dev/null
    done
    # herd: the best run's report and every run's wall; the baseline: its
    # best run, with the best compute pass of all.
    "$PY" - "$m" "$REPEAT" "${walls[@]}" <<'PYEOF'
import json, shutil, sys
m, n, walls = sys.argv[1], int(sys.argv[2]), [float(w) for w in sys.argv[3:]]
best = min(range(n), key=lambda i: walls[i])
shutil.copy(f"herd-{m}-{best + 1}.json", f"herd-{m}.json")
json.dump({"wall_s": walls[best], "runs_s": walls}, open(f"herd-{m}-wall.json", "w"))
runs = [json.load(open(f"baseline-{m}-{r + 1}.json")) for r in range(n)]
b = min(runs, key=lambda x: x["total_s"])
b["compute_s"] = min(x["compute_s"] for x in runs)
b["compute_rows_per_s"] = b["rows"] / b["compute_s"]
b["repeat"] = runs[0]["repeat"]
b["total_runs_s"] = [x["total_s"] for x in runs]
json.dump(b, open(f"baseline-{m}.json", "w"))
PYEOF
done

"$PY" -c "import json, sys; json.dump([json.load(open(f'baseline-{m}.json')) for m in sys.argv[1:]], open('baselines.json', 'w'))" $MODELS
echo "== herd bench compute --baseline (native path on the same files, best of $REPEAT)" >&2
settle
"$HERD" bench compute --baseline baselines.json --json > herd-compute.json

echo "load average (1, 5, 15 min): $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end, on $(nproc) cores" > load.txt
"$PY" - "$WORK" $MODELS <<'EOF'
import json, os, sys
w, models = sys.argv[1], sys.argv[2:]
load = lambda f: json.load(open(os.path.join(w, f)))
compute = {}
for r in load("herd-compute.json"):  # the fastest native row of each model
    if r["backend"] == "cpu" and r["rows_per_s"] > compute.get(r["model"], {"rows_per_s": 0})["rows_per_s"]:
        compute[r["model"]] = r
print()
print(f"{'model':<10} {'rows':>9}  {'what':<16} {'herd s':>8} {'baseline s':>10} {'herd rows/s':>12} {'base rows/s':>12} {'speedup':>8}")
for m, name in (("mlp", "mlp"), ("tt", "two_tower"), ("gbdt", "gbdt")):
    if m not in models:
        continue
    b, rep, wall = load(f"baseline-{m}.json"), load(f"herd-{m}.json"), load(f"herd-{m}-wall.json")
    n = b["rows"]
    lines = [
        ("model compute", compute[name]["seconds"], b["compute_s"]),
        ("end to end", wall["wall_s"], b["total_s"]),
    ]
    for what, hs, bs in lines:
        print(f"{name:<10} {n:>9}  {what:<16} {hs:>8.3f} {bs:>10.3f} {n / hs:>12,.0f} {n / bs:>12,.0f} {bs / hs:>7.2f}x")
    own = compute[name]["rows_per_s"]
    print(f"{'':<10} {'':>9}  end to end = {100 * (n / wall['wall_s']) / own:.0f}% of herd's own compute rate "
          f"({n / wall['wall_s']:,.0f} of {own:,.0f} rows/s)")
    print(f"{'':<10} {'':>9}  end to end runs (s): herd " + " ".join(f"{w:.3f}" for w in wall["runs_s"])
          + "; baseline " + " ".join(f"{w:.3f}" for w in b["total_runs_s"]))
    cb, wb = rep.get("input_bytes_coordinator", 0), rep.get("input_bytes_workers", 0)
    share = f"{100 * cb / wb:.3f}% of the workers'" if wb else "workers read nothing"
    print(f"{'':<10} {'':>9}  input bytes: coordinator {cb:,}, workers {wb:,} ({share}); "
          f"peak RSS: coordinator {rep.get('peak_rss_bytes', 0) / 2**20:,.0f} MiB, workers "
          + ", ".join(f"{h['name']} {h.get('peak_rss_bytes', 0) / 2**20:,.0f} MiB" for h in rep["hosts"]))
    c = b["check"]
    print(f"{'':<10} {'':>9}  agreement: {c['sampled']} sampled rows, {c['identical']} identical, "
          f"{c['disagree_count']} disagree, max |diff| {c['max_abs_diff']:.1e}; herd scoring_s {rep['scoring_s']:.2f}")
g = load("baseline-gbdt.json") if "gbdt" in models else None
for r in load("herd-compute.json") if g else []:
    if r["model"] == "gbdt":
        print(f"{'gbdt':<10} {g['rows']:>9}  {'layout':<16} {r['seconds']:>8.3f} {g['compute_s']:>10.3f} "
              f"{r['rows_per_s']:>12,.0f} {g['rows'] / g['compute_s']:>12,.0f} {g['compute_s'] / r['seconds']:>7.2f}x  ({r['adapter']})")
b = load(f"baseline-{models[0]}.json")
print(f"\nbaseline: {b['engine']} {b['engine_version']}, {b['threads']} threads; herd: native CPU, "
      f"1 slot x {b['threads']} threads; model compute best of {b['repeat']}; "
      f"end to end best of {len(b['total_runs_s'])} runs, the two pipelines taking turns")
print("speedup = baseline seconds / herd seconds (above 1: herd is faster)")
print("end to end: herd = wall time of `herd run` (read, score, write, validate, flip;")
print("            [input] read = auto: the local worker reads its own rows);")
print(open(os.path.join(w, "load.txt")).read().strip())
print("            baseline = read, build graph, compute, write LMDB (imports included)")
EOF
