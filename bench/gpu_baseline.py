#!/usr/bin/env python3
"""The workloads of `herd bench gpu`, through PyTorch on CUDA, in fp32.

Run beside `herd bench gpu` in the same session (scripts/gpu-check.sh does),
so the two tables compare one card at one moment. Measures:

- the card's ceilings as its vendor library reaches them: an fp32 matrix
  product (cuBLAS, TF32 off: plain fp32 arithmetic, as herd's WGSL kernels
  do) and a device-to-device copy (bytes read plus written);
- dense 256->256 over 1M rows, the mlp 64->256->256->1 with sigmoid over 1M
  rows, and two_tower (20k users, histories pooled by mean, tower
  68->128->64, scores against 100k items of dim 64, seen items excluded,
  top 100), each with inputs already on the device ("kernels") and from
  host memory with results back ("end to end").

FLOPs are counted as herd counts them (a multiply-add is two). Prints a
table; --json FILE writes the numbers.
"""

import argparse
import json
import time

import numpy as np
import torch


def sync():
    torch.cuda.synchronize()


def timed(fn, reps=5, warmup=2):
    """Mean seconds of fn() over reps, after warmup, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    sync()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    sync()
    return start.elapsed_time(end) / 1e3 / reps


def wall(fn, reps=2):
    """Best wall-clock seconds of fn() (which must synchronize)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--fraction", type=float, default=1.0)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(0)
    g = torch.Generator(device=dev).manual_seed(1)
    rows_out = []

    def add(workload, measure, rows, secs, flops):
        rows_out.append(
            dict(
                workload=workload,
                measure=measure,
                rows=rows,
                seconds=secs,
                rows_per_s=rows / secs,
                gflops=flops / secs / 1e9,
            )
        )

    # Ceilings.
    n = 8192
    a = torch.randn(n, n, device=dev, generator=g)
    b = torch.randn(n, n, device=dev, generator=g)
    s = timed(lambda: a @ b, reps=10, warmup=3)
    sgemm_gflops = 2 * n**3 / s / 1e9
    del a, b
    x = torch.empty(2 << 30, dtype=torch.uint8, device=dev)
    y = torch.empty_like(x)
    s = timed(lambda: y.copy_(x), reps=10, warmup=3)
    copy_gbps = 2 * x.numel() / s / 1e9
    del x, y

    frac = args.fraction
    n_rows = max(1, int(1_000_000 * frac))

    # dense 256 -> 256 and the mlp.
    with torch.no_grad():
        dense = torch.nn.Linear(256, 256).to(dev)
        xd = torch.randn(n_rows, 256, device=dev, generator=g)
        s = timed(lambda: dense(xd))
        add("dense 256->256", "kernels", n_rows, s, 2 * 256 * 256 * n_rows)
        mlp = torch.nn.Sequential(
            torch.nn.Linear(64, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 1),
            torch.nn.Sigmoid(),
        ).to(dev)
        mlp_flops = 2 * (64 * 256 + 256 * 256 + 256) * n_rows
        xm = torch.randn(n_rows, 64, device=dev, generator=g)
        s = timed(lambda: mlp(xm))
        add("mlp", "kernels", n_rows, s, mlp_flops)
        host = np.random.default_rng(1).standard_normal((n_rows, 64), dtype=np.float32)

        def mlp_end_to_end():
            out = mlp(torch.from_numpy(host).to(dev)).cpu().numpy()
            assert out.shape == (n_rows, 1)

        add("mlp", "end to end", n_rows, wall(mlp_end_to_end), mlp_flops)

        # two_tower.
        users, items, dim, k, nf = max(1, int(20_000 * frac)), max(100, int(100_000 * frac)), 64, 100, 4
        rng = np.random.default_rng(2)
        lens = np.where(np.arange(users) % 20 == 0, rng.integers(500, 2000, users), rng.integers(5, 61, users))
        hist = rng.integers(0, items, lens.sum()).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        # Pool the last 500 of each history (herd's max_history), exclude all.
        capped = np.concatenate([hist[max(o, e - 500):e] for o, e in zip(offsets[:-1], offsets[1:])])
        cap_lens = np.minimum(lens, 500)
        cap_offsets = np.concatenate([[0], np.cumsum(cap_lens)[:-1]]).astype(np.int64)
        emb = torch.rand(items, dim, device=dev, generator=g) - 0.5
        tower = torch.nn.Sequential(
            torch.nn.Linear(dim + nf, 128), torch.nn.ReLU(), torch.nn.Linear(128, dim)
        ).to(dev)
        feats = torch.randn(users, nf, device=dev, generator=g)
        tt_flops = 2 * (int(cap_lens.sum()) * dim + users * ((dim + nf) * 128 + 128 * dim + items * dim))
        d_capped = torch.from_numpy(capped).to(dev)
        d_cap_off = torch.from_numpy(cap_offsets).to(dev)
        d_hist = torch.from_numpy(hist).to(dev)
        d_hist_user = torch.from_numpy(np.repeat(np.arange(users), lens)).to(dev)

        def two_tower(capped, cap_off, hist, hist_user, feats):
            pooled = torch.nn.functional.embedding_bag(capped, emb, cap_off, mode="mean")
            u = tower(torch.cat([pooled, feats], dim=1))
            best_s, best_i = [], []
            step = 4096
            for s0 in range(0, users, step):
                s1 = min(users, s0 + step)
                scores = u[s0:s1] @ emb.T
                sel = (hist_user >= s0) & (hist_user < s1)
                scores[hist_user[sel] - s0, hist[sel]] = float("-inf")
                v, i = torch.topk(scores, k, dim=1)
                best_s.append(v)
                best_i.append(i)
            return torch.cat(best_s), torch.cat(best_i)

        s = timed(lambda: two_tower(d_capped, d_cap_off, d_hist, d_hist_user, feats), reps=3, warmup=1)
        add("two_tower", "kernels", users, s, tt_flops)
        h_feats = feats.cpu().numpy()
        h_user = np.repeat(np.arange(users), lens)

        def tt_end_to_end():
            v, i = two_tower(
                torch.from_numpy(capped).to(dev),
                torch.from_numpy(cap_offsets).to(dev),
                torch.from_numpy(hist).to(dev),
                torch.from_numpy(h_user).to(dev),
                torch.from_numpy(h_feats).to(dev),
            )
            out = (v.cpu().numpy(), i.cpu().numpy())
            assert out[0].shape == (users, k)

        add("two_tower", "end to end", users, wall(tt_end_to_end), tt_flops)

    result = dict(
        engine=f"torch {torch.__version__} (CUDA {torch.version.cuda}), fp32, TF32 off",
        device=props.name,
        multiprocessors=props.multi_processor_count,
        sgemm_gflops=sgemm_gflops,
        copy_gbytes_per_s=copy_gbps,
        rows=rows_out,
    )
    print(f"{result['engine']} on {props.name} ({props.multi_processor_count} SMs)")
    print(f"ceilings: cuBLAS fp32 sgemm 8192^3 {sgemm_gflops / 1e3:.1f} TFLOP/s; device copy {copy_gbps:.0f} GB/s")
    print(f"{'workload':<15} {'measure':<10} {'rows':>9} {'ms':>9} {'rows/s':>12} {'GFLOP/s':>9}")
    for r in rows_out:
        print(
            f"{r['workload']:<15} {r['measure']:<10} {r['rows']:>9} {r['seconds'] * 1e3:>9.2f} "
            f"{r['rows_per_s']:>12.0f} {r['gflops']:>9.0f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
