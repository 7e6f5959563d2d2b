#!/usr/bin/env bash
# Checks herd's wgpu kernels on this machine's adapter: lists the adapters
# wgpu sees (and the one the tests run on), runs tests/gpu_kernels.rs, then
# `herd bench compute`, whose table has a `gpu` row when a real adapter is found.
# On a machine with a real GPU the tests run there; without one they run on a
# software adapter (lavapipe), which must be installed:
#   apt-get install -y mesa-vulkan-drivers libvulkan1
# Usage: scripts/gpu-check.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== adapters (vulkaninfo --summary, when installed)"
if command -v vulkaninfo >/dev/null 2>&1; then
    vulkaninfo --summary 2>/dev/null | grep -E "deviceName|deviceType|driverName|apiVersion" || true
else
    echo "vulkaninfo not installed (apt-get install -y vulkan-tools); skipping the list"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

echo "== build"
cargo test --test gpu_kernels --no-run

echo "== kernels vs the reference (the adapter used is printed first)"
NODEVICE_SELECT=1 cargo test --test gpu_kernels -- --nocapture --test-threads=1 "$@" 2>&1 \
    | grep -vE "XDG_RUNTIME_DIR"

echo "== compute benchmark (native CPU path, and the GPU when a real adapter is found)"

NODEVICE_SELECT=1 cargo run --release -- bench compute 2>&1 | grep -vE "XDG_RUNTIME_DIR"
