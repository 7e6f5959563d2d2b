#!/usr/bin/env bash
# Two (or more) herd binaries on the same job, interleaved, for an A/B of
# end-to-end runs on a machine whose load changes: one line per run with the
# load average, wall and user+sys seconds (/usr/bin/time), when the first
# chunk started and the last ended (the report's timeline) and the tail
# after it (validation, flip, report, exit).
#
#   bench/compare.sh --full --only mlp,tt --keep DIR   # writes the jobs and data
#   bench/ab.sh DIR mlp 3 /path/to/herd-a /path/to/herd-b
#
# The job is DIR/JOB.toml (mlp, tt or gbdt as compare.sh writes them); its
# store is removed before each run.
set -euo pipefail
if [ $# -lt 4 ]; then sed -n '2,12p' "$0"; exit 2; fi
dir=$1 job=$2 n=$3; shift 3
bins=()
for b in "$@"; do bins+=("$(cd "$(dirname "$b")" && pwd)/$(basename "$b")"); done
cd "$dir"
[ -f "$job.toml" ] || { echo "ab.sh: no $dir/$job.toml (run compare.sh --keep $dir first)" >&2; exit 2; }
store=$(sed -n 's/^store = "\(.*\)"/\1/p' "$job.toml")
for _ in $(seq "$n"); do
    for b in "${bins[@]}"; do
        rm -rf "$store"
        sync  # the last run's writeback out of this one's time
        load=$(cut -d' ' -f1 /proc/loadavg)
        /usr/bin/time -o ab-time.txt -f "%e %U %S" "$b" run "$job.toml" --report ab-report.json > ab-run.log 2>&1 ||
            { cat ab-run.log >&2; echo "ab.sh: $b failed" >&2; exit 1; }
        python3 - "$job" "$b" "$load" ab-time.txt ab-report.json <<'PY'
import json, sys
job, binary, load, times, report = sys.argv[1:]
wall, user, sys_s = map(float, open(times).read().split())
t = json.load(open(report))["timeline"]
first, last = min(a["start_s"] for a in t), max(a["end_s"] for a in t)
print(f"{job} {binary} load {load} wall {wall:.2f} user+sys {user + sys_s:.2f} "
      f"first {first:.3f} last_end {last:.3f} tail {wall - last:.3f}")
PY
    done
done
