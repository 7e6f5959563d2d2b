#!/usr/bin/env bash
# Checks herd's WGSL kernels on this machine's GPU, in one bounded run:
#   1. the adapters wgpu sees (and, when none is a real GPU, why: Vulkan
#      loader, ICD files, driver libraries, device nodes, vulkaninfo);
#   2. tests/gpu_kernels.rs against the CPU reference, on the real adapter;
#   3. `herd bench gpu` (kernels alone and end to end, split by kernel, as
#      fractions of the card's fp32 peak and bandwidth, with --variants)
#      beside bench/gpu_baseline.py (PyTorch/cuBLAS on the same card, same
#      shapes) in the same run, then `herd bench compute`;
#   4. the demo job's shape with device = "auto" against device = "cpu"
#      (tests/run_devices.rs, the ignored test), equal within 1e-4.
# Everything goes to $OUT (default ./gpu-check-out): gpu-check.log and the
# JSON of both benchmarks.
#
# Usage: scripts/gpu-check.sh [--prebuilt DIR]
#   Without --prebuilt it builds here (cargo, release). With it, DIR holds
#   herd, gpu_kernels and run_devices (optionally gzipped) built elsewhere
#   with `scripts/gpu-check.sh --package DIR` on a machine with a toolchain,
#   for a GPU machine without one; the Vulkan loader can come along as .deb
#   files in .gl/ (unpacked when no libvulkan.so.1 is installed).
# Each step has its own time limit; the whole run takes a few minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-check-out}

package() {
    local dir=$1
    mkdir -p "$dir"
    cargo build --release
    local tests
    tests=$(cargo test --release --test gpu_kernels --test run_devices --no-run 2>&1 |
        sed -n 's/.*Executable tests\/\([a-z_]*\)\.rs (\(.*\))/\1 \2/p')
    echo "$tests" | while read -r name path; do
        strip -o "$dir/$name" "$path" && gzip -f "$dir/$name"
    done
    strip -o "$dir/herd" target/release/herd && gzip -f "$dir/herd"
    ls -la "$dir"
}

if [ "${1:-}" = "--package" ]; then
    package "${2:?--package DIR}"
    exit
fi

mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
step() { echo; echo "== $*"; }
export NODEVICE_SELECT=1 RUST_BACKTRACE=1

step "machine"
date -u
uname -a
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
else
    echo "nvidia-smi: not found"
fi

step "Vulkan loader"
if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
    if ls .gl/*.deb >/dev/null 2>&1; then
        echo "no libvulkan.so.1 installed: unpacking .gl/*.deb"
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
fi
ldconfig -p | grep -E 'libvulkan\.so|libGLX_nvidia|libnvidia-glcore|libEGL_nvidia' || echo "no Vulkan loader or NVIDIA GL/Vulkan driver library found by ldconfig"
icd_dirs="/usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d"
for d in $icd_dirs; do
    [ -d "$d" ] && ls -l "$d"
done
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] &&
    ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1 &&
    [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    echo "VK_DRIVER_FILES=$VK_DRIVER_FILES (the driver's own ICD file)"
fi
ls -l /dev/nvidia* /dev/dri 2>/dev/null || echo "no /dev/nvidia* or /dev/dri device nodes"
vulkaninfo=$(command -v vulkaninfo || true)
if [ -z "$vulkaninfo" ] && ls .gl/extra/vulkan-tools*.deb >/dev/null 2>&1; then
    # vulkan-tools and the X libraries it links, unpacked aside (not over
    # the system's own libraries).
    for f in .gl/extra/*.deb; do dpkg -x "$f" /tmp/vulkan-tools; done
    vulkaninfo="env LD_LIBRARY_PATH=/tmp/vulkan-tools/usr/lib/x86_64-linux-gnu /tmp/vulkan-tools/usr/bin/vulkaninfo"
fi
if [ -n "$vulkaninfo" ]; then
    timeout 30 $vulkaninfo --summary 2>&1 | grep -E "deviceName|deviceType|driverName|driverInfo|apiVersion|ERROR" || true
else
    echo "vulkaninfo: not installed (vulkan-tools)"
fi

step "binaries"
BIN=$ROOT/target/release
if [ "${1:-}" = "--prebuilt" ]; then
    pre=${2:?--prebuilt DIR}
    mkdir -p "$BIN"
    for f in herd gpu_kernels run_devices; do
        if [ -f "$pre/$f.gz" ]; then gunzip -c "$pre/$f.gz" >"$BIN/$f"; else cp "$pre/$f" "$BIN/$f"; fi
        chmod +x "$BIN/$f"
    done
    # The test binaries find the herd binary and the repository at the paths
    # they were built in; point those paths here.
    built_root=$(grep -a -o -m1 '/[[:alnum:]/._-]*/target/release/herd' "$BIN/run_devices" | head -1 | sed 's|/target/release/herd||')
    if [ -n "$built_root" ] && [ "$built_root" != "$ROOT" ] && [ ! -e "$built_root" ]; then
        mkdir -p "$(dirname "$built_root")" && ln -s "$ROOT" "$built_root"
        echo "linked $built_root -> $ROOT"
    fi
    KERNEL_TESTS=$BIN/gpu_kernels
    DEVICE_TESTS=$BIN/run_devices
else
    timeout 1800 cargo build --release || exit 1
    KERNEL_TESTS=$(cargo test --release --test gpu_kernels --no-run 2>&1 | sed -n 's/.*Executable tests\/gpu_kernels\.rs (\(.*\))/\1/p')
    DEVICE_TESTS=$(cargo test --release --test run_devices --no-run 2>&1 | sed -n 's/.*Executable tests\/run_devices\.rs (\(.*\))/\1/p')
fi
HERD=$BIN/herd
ls -l "$HERD" "$KERNEL_TESTS" "$DEVICE_TESTS"

step "adapters (herd hosts check on a local host with device = auto)"
tmp=$(mktemp -d)
printf '[[host]]\nname = "this-machine"\nkind = "local"\nslots = 1\ndevice = "auto"\n' >"$tmp/hosts.toml"
timeout 60 "$HERD" hosts check --hosts "$tmp/hosts.toml"

step "kernel tests on the adapter (the first line names it)"
timeout 200 "$KERNEL_TESTS" --test-threads=1 --nocapture 2>&1 | grep -vE "XDG_RUNTIME_DIR"

step "card ceilings"
PEAK_ARGS=()
if command -v nvidia-smi >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
    sms=$(timeout 60 python3 -c 'import torch; print(torch.cuda.get_device_properties(0).multi_processor_count)' 2>/dev/null)
    mhz=$(nvidia-smi --query-gpu=clocks.max.sm --format=csv,noheader,nounits | head -1 | tr -d ' ')
    if [ -n "$sms" ] && [ -n "$mhz" ]; then
        # 128 fp32 lanes per multiprocessor (Ampere GA10x, Ada, Hopper), 2 FLOP per FMA.
        peak=$(python3 -c "print(round($sms * 128 * 2 * $mhz / 1e3, 1))")
        echo "fp32 peak: $sms SMs x 128 lanes x 2 x $mhz MHz = $peak GFLOP/s"
        PEAK_ARGS+=(--peak-gflops "$peak")
    fi
fi

step "PyTorch on the same card, same shapes (bench/gpu_baseline.py)"
if timeout 150 python3 bench/gpu_baseline.py --json "$OUT/torch.json"; then
    bw=$(python3 -c "import json; print(round(json.load(open('$OUT/torch.json'))['copy_gbytes_per_s']))")
    PEAK_ARGS+=(--peak-gbps "$bw")
    echo "memory bandwidth used for fractions: $bw GB/s (measured device copy)"
else
    echo "PyTorch baseline did not run (python3 with torch on CUDA needed)"
fi

step "herd bench gpu ${PEAK_ARGS[*]} --variants"
timeout 200 "$HERD" bench gpu "${PEAK_ARGS[@]}" --variants --json >"$OUT/bench-gpu.json"
python3 - "$OUT/bench-gpu.json" <<'EOF' || cat "$OUT/bench-gpu.json"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"adapter: {r['adapter']} ({r['backend']}, driver {r['driver']})")
for row in r["rows"]:
    frac = row["fraction_of_fp32_peak"]
    frac = f"{frac * 100:.1f}%" if frac is not None else "-"
    print(f"{row['workload']:<15} {row['measure']:<10} {row['config']:<30} {row['seconds'] * 1e3:>9.2f} ms {row['rows_per_s']:>12.0f} rows/s {row['gflops']:>8.0f} GFLOP/s {frac:>7}")
    if row["kernels"]:
        print("    " + ", ".join(f"{k} {s * 1e3:.2f} ms" for k, s in row["kernels"]))
    if row.get("pool_gbytes_per_s"):
        f = row.get("pool_fraction_of_bandwidth")
        print(f"    pool {row['pool_gbytes_per_s']:.0f} GB/s" + (f" ({f * 100:.1f}% of bandwidth)" if f else ""))
EOF

step "the demo job with device = auto against device = cpu"
timeout 150 "$DEVICE_TESTS" --ignored --nocapture --test-threads=1 the_demo_job_on_a_real_gpu 2>&1 | grep -vE "XDG_RUNTIME_DIR"

step "herd bench compute (native CPU path and the GPU)"
timeout 120 "$HERD" bench compute

step "done"
date -u
