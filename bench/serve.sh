#!/usr/bin/env bash
# herd serve against redis-server, side by side in one run, on the same
# 1M predictions; then HTTP under load and the Parquet export.
#
#   apt-get install -y redis-server redis-tools wrk
#   bench/serve.sh                  # 1M users, top-100 (a few minutes on 2 cores)
#   bench/serve.sh --users N --keep DIR --duration SECS
#   bench/serve.sh --rt             # servers and load tools under chrt -f 10
#
# 1. `herd gen two-tower` + `herd run` make a store of N users' top-100
#    lists (integer ids 0..N-1) through the real pipeline; the job's Redis
#    sink pushes the version into redis-server (`sink:v1:ID`), and the run's
#    log gives the push rate.
# 2. `herd store export --format parquet` is timed (entities/s), and a JSON
#    Lines export gives the exact values `herd serve` answers.
# 3. redis-server is emptied and loaded with the same N values under
#    `key:%012d` (the keys `redis-benchmark -r` asks for) through
#    `redis-cli --pipe`, timed: the baseline of the sink's JSON push; then
#    `herd bench sink` pushes the version as JSON and as binary values, the
#    binary one beside `redis-cli --pipe` of the same bytes.
# 4. `redis-benchmark -t get -c 50 -n 200000 -P 1 -r N` runs against
#    redis-server, then against `herd serve --prefix key` (which reads
#    `key:000000000042` as id 42) with 1 and with 2 worker threads, each
#    reading the store per request and then with `--preload` (the live
#    version's replies held in memory, as redis-server holds its values;
#    timed once the server logs that they are held). Before timing, keys are
#    read from both and the bytes compared, so both sides answer hits with
#    equal values. Each row also gives the server's CPU time per request
#    (user + system, /proc), which a shared machine disturbs far less than
#    requests/s.
#    The client's CPU use is printed beside each row: redis-benchmark at
#    100% of its core is the limit of that row's requests/s.
# 5. wrk drives `GET /v1/predictions/{random id}` over 50 keep-alive
#    connections against each of those servers and reports its latency
#    percentiles: with one wrk thread against the one-thread servers, two
#    against the two-thread servers.
# With --rt, redis-server, herd serve, the export, the sink's pushes,
# redis-cli --pipe, redis-benchmark and wrk run under
# SCHED_FIFO (`chrt -f 10`), so that other processes on a shared machine do
# not preempt them; the kernel's RT throttling (sched_rt_runtime_us, 95% by
# default) still pauses them for the rest of each second they saturate.
# Prints a table; exits non-zero when a step fails (not when a target is
# missed: the table says that).
set -euo pipefail

USERS=1000000
ITEMS=2000
DURATION=15
KEEP=""
RT=""
REQUESTS=200000
CLIENTS=50
REDIS_PORT=16379
RESP_PORT=16380
HTTP_PORT=18080

while [ $# -gt 0 ]; do
    case "$1" in
        --users) USERS="$2"; shift 2 ;;
        --keep) KEEP="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --rt) RT="chrt -f 10"; shift ;;
        -h|--help) sed -n '2,44p' "$0"; exit 0 ;;
        *) echo "serve.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

for tool in redis-server redis-cli redis-benchmark wrk python3; do
    command -v "$tool" >/dev/null || {
        echo "serve.sh: $tool is missing: apt-get install -y redis-server redis-tools wrk" >&2
        exit 2
    }
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
cargo build --release --quiet
HERD="$ROOT/target/release/herd"

if [ -n "$KEEP" ]; then
    WORK="$KEEP"
    mkdir -p "$WORK"
else
    WORK="$(mktemp -d)"
fi
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "$KEEP" ] || rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
say() { echo "serve.sh: $*" >&2; }

$RT redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --loglevel warning > "$WORK/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=($REDIS_PID)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# 1. The store, made by a run whose Redis sink pushes it into redis-server
# (the run's log says how fast).
SINK_RATE="not measured (store kept from an earlier run)"
if [ ! -f "$WORK/store/data.mdb" ]; then
    say "scoring $USERS users (top-100 of $ITEMS items)"
    [ -f "$WORK/data/users.parquet" ] || "$HERD" gen two-tower --out "$WORK/data" \
        --users "$USERS" --items "$ITEMS" --dim 16 --features 2 --hidden 32 --seed 11 >&2
    cat > "$WORK/hosts.toml" <<EOF
[[host]]
name = "local"
kind = "local"
slots = 2
device = "cpu"
EOF
    cat > "$WORK/job.toml" <<EOF
[job]
name = "serve-bench"
model_version = "serve-bench-1"
hosts = "hosts.toml"

[input]
path = "data/users.parquet"
id_column = "user_id"
history_column = "history"
feature_columns = ["f0", "f1"]

[model]
kind = "two_tower"
weights = "data/two_tower.safetensors"
top_k = 100
max_history = 50
exclude_seen = true

[output]
store = "store"
ttl = "7d"

[[output.sink]]
kind = "redis"
url = "redis://127.0.0.1:$REDIS_PORT/0"
prefix = "sink"

[validate]
spot_check = 100
EOF
    "$HERD" run "$WORK/job.toml" 2>&1 | tee "$WORK/run.log" >&2
    # "pushed version 1 to redis ...: N predictions in S s (R/s)"
    SINK_RATE=$(sed -n 's/.*pushed version [0-9]* to redis .* (\([0-9]*\)\/s).*/\1/p' "$WORK/run.log" | tail -1)
    [ -n "$SINK_RATE" ] || { say "the run logged no push to the Redis sink"; exit 1; }
    SINKED=$(redis-cli -p "$REDIS_PORT" dbsize)
    [ "$SINKED" = "$((USERS + 2))" ] || { say "redis-server holds $SINKED keys after the sink, not $USERS + the pointer + the claim"; exit 1; }
fi

# 2. Exports: three in a row (this machine's speed moves by a quarter from
# one run to the next); each rate is printed.
EXPORT_RATES=""
EXPORT_CPUS=""
for _ in 1 2 3; do
    t0=$(now)
    /usr/bin/time -f "%U %S" -o "$WORK/export.cpu" \
        $RT "$HERD" store export --store "$WORK/store" --format parquet --out "$WORK/live.parquet" 2> "$WORK/export.log"
    t1=$(now)
    cat "$WORK/export.log" >&2
    EXPORT_RATES="$EXPORT_RATES $(python3 -c "print(round($USERS / ($t1 - $t0)))")"
    EXPORT_CPUS="$EXPORT_CPUS $(awk '{printf "%.2f", $1 + $2}' "$WORK/export.cpu")"
done
EXPORT_RATES=$(echo $EXPORT_RATES | tr ' ' '/')
EXPORT_CPUS=$(echo $EXPORT_CPUS | tr ' ' '/')
PARQUET_BYTES=$(stat -c %s "$WORK/live.parquet")
"$HERD" store export --store "$WORK/store" --format jsonl --out "$WORK/live.jsonl" 2>&1 >/dev/null | cat >&2

# 3. redis-server with the same values, loaded by redis-cli --pipe (timed:
# the baseline of the sink's push, with the sink's `SET key value EX secs`).
say "loading redis-server with the same $USERS values"
redis-cli -p "$REDIS_PORT" flushall >/dev/null
python3 - "$WORK/live.jsonl" > "$WORK/load.resp" <<'EOF'
import sys
out = sys.stdout.buffer
with open(sys.argv[1], "rb") as f:
    for line in f:
        line = line.rstrip(b"\n")
        # Lines start with {"id":"N", as `herd store get --json` does.
        end = line.index(b'"', 7)
        key = b"key:%012d" % int(line[7:end])
        out.write(b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nEX\r\n$6\r\n604800\r\n" % (len(key), key, len(line), line))
EOF
t0=$(now)
$RT redis-cli -p "$REDIS_PORT" --pipe < "$WORK/load.resp" >&2
t1=$(now)
rm -f "$WORK/load.resp"
PIPE_RATE=$(python3 -c "print(round($USERS / ($t1 - $t0)))")
LOADED=$(redis-cli -p "$REDIS_PORT" dbsize)
[ "$LOADED" = "$USERS" ] || { say "redis-server holds $LOADED keys, not $USERS"; exit 1; }

# 3b. The sink's push of the same version into the same server (database 1,
# emptied between steps) with `herd bench sink`, as JSON and as the stored
# value bytes, each beside redis-cli --pipe of the same values with the same
# `SET key value EX secs` (the binary values are rebuilt from the JSON and
# checked byte for byte on three keys against the sink's).
sink_push() { # encoding -> entities/s
    $RT "$HERD" bench sink --store "$WORK/store" --url "redis://127.0.0.1:$REDIS_PORT/1" \
        --prefix "sink$1" --encoding "$1" | tee -a "$WORK/sink.log" >&2
    local n
    # The predictions and the push's claim on the version (`{prefix}:v1`).
    n=$(redis-cli -p "$REDIS_PORT" -n 1 dbsize)
    [ "$n" = "$((USERS + 1))" ] || { say "the $1 push left $n keys, not $USERS + its claim"; exit 1; }
    [ "$(redis-cli -p "$REDIS_PORT" -n 1 exists "sink$1:v1")" = 1 ] || { say "the $1 push left no claim key sink$1:v1"; exit 1; }
    tail -1 "$WORK/sink.log" | sed -n 's/.*(\([0-9]*\)\/s).*/\1/p'
}
say "herd bench sink, JSON values"
SINK_JSON=$(sink_push json)
redis-cli -p "$REDIS_PORT" -n 1 flushdb sync >/dev/null
python3 - "$WORK/live.jsonl" > "$WORK/load.resp" <<'EOF2'
import json, struct, sys
out = sys.stdout.buffer
select = b"*2\r\n$6\r\nSELECT\r\n$1\r\n1\r\n"
out.write(select)
with open(sys.argv[1], "rb") as f:
    for line in f:
        p = json.loads(line)
        # The stored value: format 1, kind top-K, count, model_ref (the
        # version that made it: 1), timestamp, ttl; then (item, score) pairs.
        pairs = p["top_k"]
        value = struct.pack("<BBHIII", 1, 1, len(pairs), 1, p["timestamp"], p["ttl"])
        value += b"".join(struct.pack("<If", q["item"], q["score"]) for q in pairs)
        key = b"sinkbinary:v1:%d" % int(p["id"])
        out.write(b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nEX\r\n$6\r\n604800\r\n" % (len(key), key, len(value), value))
EOF2
say "redis-cli --pipe, binary values"
t0=$(now)
$RT redis-cli -p "$REDIS_PORT" --pipe < "$WORK/load.resp" >&2
t1=$(now)
rm -f "$WORK/load.resp"
PIPE_BIN=$(python3 -c "print(round($USERS / ($t1 - $t0)))")
for id in 0 42 $((USERS - 1)); do
    a=$(redis-cli -p "$REDIS_PORT" -n 1 --no-raw get "sinkbinary:v1:$id" | md5sum)
    echo "$a" > "$WORK/bin.$id"
done
redis-cli -p "$REDIS_PORT" -n 1 flushdb sync >/dev/null
say "herd bench sink, binary values"
SINK_BIN=$(sink_push binary)
for id in 0 42 $((USERS - 1)); do
    b=$(redis-cli -p "$REDIS_PORT" -n 1 --no-raw get "sinkbinary:v1:$id" | md5sum)
    [ "$b" = "$(cat "$WORK/bin.$id")" ] || { say "binary value of id $id differs between the sink and the pipe file"; exit 1; }
done
redis-cli -p "$REDIS_PORT" -n 1 flushdb sync >/dev/null

start_herd() { # threads [--preload MIB]
    local threads="$1"; shift
    $RT "$HERD" serve --store "$WORK/store" --resp "127.0.0.1:$RESP_PORT" \
        --http "127.0.0.1:$HTTP_PORT" --prefix key --threads "$threads" "$@" > "$WORK/serve.log" 2>&1 &
    HERD_PID=$!
    PIDS+=($HERD_PID)
    local up=""
    for _ in $(seq 100); do redis-cli -p "$RESP_PORT" ping >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
    [ -n "$up" ] || { say "herd serve did not start:"; cat "$WORK/serve.log" >&2; exit 1; }
    [ $# -gt 0 ] || return 0
    # --preload: wait until the live version is held.
    for _ in $(seq 1200); do grep -q 'preloaded v' "$WORK/serve.log" && { grep 'preloaded v' "$WORK/serve.log" >&2; return 0; }; sleep 0.1; done
    say "herd serve did not preload the live version in 120 s:"; cat "$WORK/serve.log" >&2; exit 1
}
stop_herd() { kill "$HERD_PID"; wait "$HERD_PID" 2>/dev/null || true; }

# Both sides answer the same bytes for the same key.
same_bytes() { # what herd serve runs as
    local id key a b
    for id in 0 42 $((USERS - 1)); do
        key=$(printf 'key:%012d' "$id")
        a=$(redis-cli -p "$REDIS_PORT" --no-raw get "$key" | md5sum)
        b=$(redis-cli -p "$RESP_PORT" --no-raw get "$key" | md5sum)
        [ "$a" = "$b" ] || { say "$key differs between redis-server and $1"; exit 1; }
    done
}
# 4. redis-benchmark. CSV: "test","rps","avg","min","p50","p95","p99","max".
# Also the server's CPU time per request (user + system, from /proc), which
# other processes on a shared machine disturb far less than requests/s, and
# how busy the client was (its CPU time over its wall time): a client near
# 100% of its core is the limit of the requests/s, whatever the server.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The client's CPU time (user + system, as /usr/bin/time wrote it to
# client.cpu) over the wall time from $1 to $2, in percent of one core.
client_busy() {
    awk -v w="$(python3 -c "print($2 - $1)")" '{printf "%.0f", 100 * ($1 + $2) / w}' "$WORK/client.cpu"
}
bench_get() { # port server-pid -> rps p50 p99 cpu-us-per-request client-busy-%
    local t0 w0 w1 row
    t0=$(cpu_ticks "$2")
    w0=$(now)
    row=$(/usr/bin/time -f "%U %S" -o "$WORK/client.cpu" \
        $RT redis-benchmark -p "$1" -t get -c "$CLIENTS" -n "$REQUESTS" -P 1 -r "$USERS" --csv 2>/dev/null \
        | awk -F'","' '/^"GET/ {gsub(/"/, "", $0); split($0, f, ","); print f[2], f[5], f[7]}')
    w1=$(now)
    echo "$row $(python3 -c "print(round(($(cpu_ticks "$2") - $t0) * 1e6 / $(getconf CLK_TCK) / $REQUESTS, 1))")" \
        "$(client_busy "$w0" "$w1")"
}

# 5. HTTP with wrk (50 keep-alive connections, random ids), against each
# server: one client thread beside a one-thread server (each may have one
# of this machine's two cores, as redis-benchmark and redis-server have in
# step 4), and two client threads beside a two-thread server (four busy
# threads on two cores: a request then also waits for its turn on a core).
cat > "$WORK/ids.lua" <<EOF
math.randomseed(7)
request = function()
  return wrk.format("GET", "/v1/predictions/" .. math.random(0, $USERS - 1))
end
EOF
ms() { # wrk prints 812.00us, 1.20ms or 1.05s
    python3 -c "
import sys; v = sys.argv[1]
for unit, f in (('us', 1e-3), ('ms', 1.0), ('s', 1e3)):
    if v.endswith(unit): print(round(float(v[:-len(unit)]) * f, 3)); break
" "$1"
}
http_load() { # wrk-threads server-pid -> "requests/s p50 p99 client-busy-% server-busy-% errors..."
    say "wrk -t$1: ${DURATION}s of GET /v1/predictions/{id}, $CLIENTS connections"
    local t0 w0 w1
    t0=$(cpu_ticks "$2")
    w0=$(now)
    /usr/bin/time -f "%U %S" -o "$WORK/client.cpu" \
        $RT wrk -t "$1" -c "$CLIENTS" -d "${DURATION}s" --latency -s "$WORK/ids.lua" \
        "http://127.0.0.1:$HTTP_PORT" > "$WORK/wrk.txt"
    w1=$(now)
    cat "$WORK/wrk.txt" >&2
    echo "$(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk.txt")" \
        "$(ms "$(awk '$1 == "50%" {print $2}' "$WORK/wrk.txt")")" \
        "$(ms "$(awk '$1 == "99%" {print $2}' "$WORK/wrk.txt")")" \
        "$(client_busy "$w0" "$w1")" \
        "$(python3 -c "print(round(($(cpu_ticks "$2") - $t0) * 100 / $(getconf CLK_TCK) / ($w1 - $w0)))")" \
        "$(awk '/Non-2xx|Socket errors/' "$WORK/wrk.txt" | tr '\n' ' ')"
}

# The GET row and the HTTP row of each server: 1 and 2 threads reading the
# store per request, then the same with --preload (the live version's
# replies held in memory, as redis-server holds its values; the limit is the
# JSON export's size and then some).
say "redis-benchmark against redis-server"
REDIS_ROW=$(bench_get "$REDIS_PORT" "$REDIS_PID")
PRELOAD_MIB=$(( $(stat -c %s "$WORK/live.jsonl") / 1048576 * 3 / 2 + 256 ))
GET_ROWS=()
HTTP_ROWS=()
for setup in "1|" "2|" "1|--preload $PRELOAD_MIB" "2|--preload $PRELOAD_MIB"; do
    IFS='|' read -r th extra <<< "$setup"
    # shellcheck disable=SC2086 # $extra is empty or two words
    start_herd "$th" $extra
    name="herd serve${extra:+ --preload}, $th thread$([ "$th" = 1 ] || echo s)"
    same_bytes "$name"
    say "redis-benchmark against $name"
    GET_ROWS+=("$name|$(bench_get "$RESP_PORT" "$HERD_PID")")
    HTTP_ROWS+=("$name; wrk -t$th|$(http_load "$th" "$HERD_PID")")
    stop_herd
done
# redis-server once more, after every herd row: how much the machine moved.
say "redis-benchmark against redis-server, again"
REDIS2_ROW=$(bench_get "$REDIS_PORT" "$REDIS_PID")

read -r R_RPS R_P50 R_P99 R_CPU R_BUSY <<< "$REDIS_ROW"
read -r R2_RPS R2_P50 R2_P99 R2_CPU R2_BUSY <<< "$REDIS2_ROW"
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "store: $USERS users x top-100, $(du -sh "$WORK/store" | cut -f1); values $(head -c 100000 "$WORK/live.jsonl" | head -1 | wc -c) bytes of JSON each"
echo
printf "%-44s %12s %9s %9s %9s %7s  %s\n" "GET, redis-benchmark -c $CLIENTS -n $REQUESTS -P 1" "requests/s" "p50 ms" "p99 ms" "CPU us" "client" "vs redis-server"
printf "%-44s %12s %9s %9s %9s %6s%%  %s\n" "redis-server $(redis-server --version | awk '{print $3}')" "$R_RPS" "$R_P50" "$R_P99" "$R_CPU" "$R_BUSY" "baseline"
for row in "${GET_ROWS[@]}"; do
    IFS='|' read -r name rest <<< "$row"
    read -r rps p50 p99 cpu busy <<< "$rest"
    ratio=$(python3 -c "print(f'{$rps / $R_RPS:.2f}x throughput ({$rps / $R2_RPS:.2f}x the second row), p99 {$p99 / $R_P99:.2f}x, CPU/request {$cpu / $R_CPU:.2f}x')")
    printf "%-44s %12s %9s %9s %9s %6s%%  %s\n" "$name" "$rps" "$p50" "$p99" "$cpu" "$busy" "$ratio"
done
printf "%-44s %12s %9s %9s %9s %6s%%  %s\n" "redis-server, again after the herd rows" "$R2_RPS" "$R2_P50" "$R2_P99" "$R2_CPU" "$R2_BUSY" \
    "$(python3 -c "print(f'{$R2_RPS / $R_RPS:.2f}x the first run')")"
echo "(client: redis-benchmark's CPU time over its wall time; one core = 100%)"
echo
printf "%-44s %12s %9s %9s %7s %7s  %s\n" "HTTP GET, wrk -c$CLIENTS -d${DURATION}s, keep-alive" "requests/s" "p50 ms" "p99 ms" "client" "server" "target p99 < 2 ms"
for row in "${HTTP_ROWS[@]}"; do
    IFS='|' read -r name rest <<< "$row"
    read -r rps p50 p99 cbusy sbusy errors <<< "$rest"
    printf "%-44s %12s %9s %9s %6s%% %6s%%  %s\n" "$name" "$rps" "$p50" "$p99" "$cbusy" "$sbusy" "${errors:-no errors}"
done
echo "(client: wrk's CPU time over its wall time, server: herd serve's; one core = 100%, the machine has $(nproc))"
echo
printf "%-44s %20s %5s %15s  %s\n" "export" "entities/s" "MB" "CPU s" "target >= 500000/s"
printf "%-44s %20s %5s %15s\n" "herd store export --format parquet, 3 runs" "$EXPORT_RATES" "$((PARQUET_BYTES / 1000000))" "$EXPORT_CPUS"
echo
printf "%-44s %12s  %s\n" "into redis-server, the same values" "entities/s" "target: sink >= 200000/s"
printf "%-44s %12s  %s\n" "redis-cli --pipe, JSON (baseline)" "$PIPE_RATE" "baseline"
printf "%-44s %12s  %s\n" "herd bench sink, JSON" "$SINK_JSON" \
    "$(python3 -c "print(f'{$SINK_JSON / $PIPE_RATE:.2f}x')")"
printf "%-44s %12s  %s\n" "redis-cli --pipe, binary (baseline)" "$PIPE_BIN" "baseline"
printf "%-44s %12s  %s\n" "herd bench sink, binary" "$SINK_BIN" \
    "$(python3 -c "print(f'{$SINK_BIN / $PIPE_BIN:.2f}x')")"
printf "%-44s %12s  %s\n" "herd run's JSON push (during the run)" "$SINK_RATE" "not under --rt"
echo
echo "load average at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)${RT:+; servers, export, sink and load tools under $RT}"
