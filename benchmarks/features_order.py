"""Ordering speed, peak memory and quality on synthetic embeddings (n = 10k, 100k, 1M).

Each case runs in its own subprocess so its peak RSS (resource.getrusage) is its own. Cases:
`ours` = features.order.order_vectors (exact farthest-first up to exact_max, two-level above),
`exact` = ours forced exact, `two_level` = ours forced two-level, `numpy_allpairs` = the plain
baseline: the full N x N distance matrix with numpy, then the same greedy loop over its rows
(only where N^2 float32 fits in memory). Quality = covering radius of the first k images (the
largest distance from any pool image to its nearest chosen image; smaller = more diverse
prefix; farthest-first is the classic 2-approximation of the best possible), compared with exact
and with a random order.

    nice -n 10 .venv/bin/python benchmarks/features_order.py [--quick] [--max-n 1000000]
Writes benchmarks/results/features_order.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "features_order.json"
MACHINE = "2-core CPU, 24 GiB, no GPU (dev box, shared with other jobs)"


def synthetic(n: int, d: int, pca: int, seed: int = 0, chunk: int = 50_000) -> np.ndarray:
    """Mixture of 64 Gaussian clusters in d dims (unit-normalised like real embeddings).

    With pca > 0 the 2048-d rows are generated chunk by chunk and reduced by faiss PCA
    (trained on the first 50k rows), so the full n x d array never exists.
    """
    import faiss
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(64, d)).astype(np.float32)
    scales = rng.uniform(0.3, 1.5, size=64).astype(np.float32)

    def make(m: int) -> np.ndarray:
        lab = rng.integers(64, size=m)
        x = centers[lab] + rng.standard_normal((m, d), dtype=np.float32) * scales[lab, None]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    if not pca:
        return np.concatenate([make(min(chunk, n - i)) for i in range(0, n, chunk)])
    first = make(min(chunk, n))
    mat = faiss.PCAMatrix(d, pca)
    mat.train(first)
    out = np.empty((n, pca), np.float32)
    out[:len(first)] = mat.apply(first)
    for i in range(len(first), n, chunk):
        out[i:i + chunk] = mat.apply(make(min(chunk, n - i)))
    return out


def numpy_allpairs(x: np.ndarray, start: int) -> np.ndarray:
    """The plain baseline: full distance matrix, then greedy farthest-first over its rows."""
    sq = (x * x).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * x @ x.T
    n = len(x)
    mind = dist[start].copy()
    mind[start] = -np.inf
    order = [start]
    for _ in range(n - 1):
        c = int(np.argmax(mind))
        order.append(c)
        mind = np.minimum(mind, dist[c])
        mind[c] = -np.inf
    return np.array(order)


def coverage(x: np.ndarray, chosen: np.ndarray) -> tuple[float, float]:
    """(max, mean) distance from every pool vector to its nearest chosen vector."""
    from features.order import nearest_sq
    d = np.sqrt(nearest_sq(x, x[chosen]))
    return float(d.max()), float(d.mean())


THREADS = 1  # one BLAS/OpenMP thread: on the shared dev box (load average 10-20 on 2
# cores) two spinning threads ran 10-40x slower than one; see docs/benchmarks/features.md


def run_case(n: int, d: int, pca: int, algo: str, exact_max: int) -> dict:
    import torch
    torch.set_num_threads(THREADS)
    import faiss
    faiss.omp_set_num_threads(THREADS)
    from features.config import OrderParams
    from features.order import order_vectors, two_level
    t0 = time.perf_counter()
    x = synthetic(n, d, pca)
    t_gen = time.perf_counter() - t0
    params = OrderParams(method="dissimilar", seed=0, starts=1, pca_dim=0, device="cpu",
                         exact_max=exact_max)
    t0 = time.perf_counter()
    if algo == "numpy_allpairs":
        order = numpy_allpairs(x, 0)
    elif algo == "two_level":  # pure two-level, forced at the top level (no exact head)
        order = two_level(x, False, 0, 1, n, "cpu")
    elif algo == "hybrid":     # exact head of exact_head picks + two-level tail, forced
        order = order_vectors(x, "dissimilar", params, exact_limit=1)
    elif algo == "exact":
        order = order_vectors(x, "dissimilar", params, exact_limit=n)
    else:                      # "ours": what order.method dissimilar does with defaults
        order = order_vectors(x, "dissimilar", params)
    seconds = time.perf_counter() - t0
    assert sorted(order.tolist()) == list(range(n)), "not a permutation"
    quality = {}
    rnd_order = np.random.default_rng(1).permutation(n)
    for k in sorted({100, 1000, n // 10}):
        for name, o in (("", order), ("random_", rnd_order)):
            radius, mean = coverage(x, o[:k])
            quality[f"{name}radius@{k}"] = radius
            quality[f"{name}mean_nn@{k}"] = mean
    return {"n": n, "d": pca or d, "pca_from": d if pca else None, "algo": algo,
            "load_avg_1min": round(__import__("os").getloadavg()[0], 1), "threads": THREADS,
            "seconds": round(seconds, 3), "generate_seconds": round(t_gen, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            **{k: round(v, 5) for k, v in quality.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs=5, metavar=("N", "D", "PCA", "ALGO", "EXACT_MAX"))
    ap.add_argument("--max-n", type=int, default=1_000_000)
    ap.add_argument("--exact-max", type=int, default=20_000)
    ap.add_argument("--timeout", type=int, default=1500, help="seconds per case")
    ap.add_argument("--plot-only", action="store_true", help="only redraw the plots")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads(OUT.read_text())["cases"])
        return
    if args.case:
        n, d, pca, algo, em = args.case
        print(json.dumps(run_case(int(n), int(d), int(pca), algo, int(em))))
        return
    cases = [
        (10_000, 2048, 0, "numpy_allpairs"), (10_000, 2048, 0, "exact"),
        (10_000, 2048, 0, "two_level"), (10_000, 2048, 0, "hybrid"),
        (10_000, 2048, 128, "numpy_allpairs"), (10_000, 2048, 128, "exact"),
        (10_000, 2048, 128, "two_level"), (10_000, 2048, 128, "hybrid"),
        (100_000, 2048, 128, "ours"), (1_000_000, 2048, 128, "ours"),
        (100_000, 2048, 128, "numpy_allpairs"), (100_000, 2048, 0, "ours"),
        (100_000, 2048, 128, "exact"),
    ]
    results = json.loads(OUT.read_text())["cases"] if OUT.exists() else []
    done = {(r["n"], r.get("pca_from") or r["d"], r["d"] if r.get("pca_from") else 0, r["algo"])
            for r in results if "seconds" in r}
    for n, d, pca, algo in cases:
        if n > args.max_n or (n, d, pca, algo) in done:
            continue
        if algo == "numpy_allpairs" and n * n * 4 * 3 > 20 * 2**30:
            results.append({"n": n, "d": pca or d, "pca_from": d if pca else None,
                            "algo": algo, "skipped": f"needs {n * n * 4 * 3 / 2**30:.0f} GiB "
                            "(N x N float32 plus two temporaries); this box has 24 GiB"})
            _write(results)
            continue
        cmd = [sys.executable, __file__, "--case", str(n), str(d), str(pca), algo,
               str(args.exact_max)]
        print("running", " ".join(cmd[2:]), flush=True)
        try:
            env = {**os.environ, "OMP_NUM_THREADS": str(THREADS),
                   "OPENBLAS_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                               env=env)
            row = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else \
                {"n": n, "d": pca or d, "algo": algo, "error": p.stderr[-500:]}
        except subprocess.TimeoutExpired:
            row = {"n": n, "d": pca or d, "algo": algo, "error": f"timeout {args.timeout}s"}
        print(row, flush=True)
        results.append(row)
        _write(results)
    _write(results)
    plot(results)


def plot(results: list[dict]) -> None:
    """docs/img/features_order_time.png and features_order_quality.png from the results."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    img = ROOT / "docs" / "img"
    img.mkdir(parents=True, exist_ok=True)
    rows = [r for r in results if "seconds" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    for algo in ("numpy_allpairs", "exact", "two_level", "hybrid", "ours"):
        for d in sorted({r["d"] for r in rows}):
            pts = sorted((r["n"], r["seconds"]) for r in rows if r["algo"] == algo
                         and r["d"] == d)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{algo}, d={d}")
    ax.axhline(60, color="grey", ls=":", lw=1)
    ax.text(1.2e4, 66, "100k target: 60 s", fontsize=8, color="grey")
    ax.axhline(900, color="grey", ls="--", lw=1)
    ax.text(1.2e4, 990, "1M target: 15 min", fontsize=8, color="grey")
    ax.set(xscale="log", yscale="log", xlabel="pool size n", ylabel="seconds to order",
           title="Dissimilar (farthest-first) ordering time, CPU")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(img / "features_order_time.png", dpi=110)
    plt.close(fig)
    ten = [r for r in rows if r["n"] == 10_000]
    if ten:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, metric in zip(axes, ("radius@100", "mean_nn@100")):
            labels = [f"{r['algo']}\nd={r['d']}" for r in ten] + ["random\nd=128",
                                                                  "random\nd=2048"]
            rnd = {r["d"]: r[f"random_{metric}"] for r in ten}
            vals = [r[metric] for r in ten] + [rnd.get(128, 0), rnd.get(2048, 0)]
            ax.bar(range(len(vals)), vals, color=["C0"] * len(ten) + ["C7", "C7"])
            ax.set_xticks(range(len(vals)), labels, fontsize=6)
            ax.set(title=f"{metric} (first 100 picks, n=10k; lower = better spread)")
            ax.title.set_fontsize(8)
        fig.tight_layout()
        fig.savefig(img / "features_order_quality.png", dpi=110)
        plt.close(fig)


def _write(results: list[dict]) -> None:
    from tinyloop.atomic import write_json_atomic
    write_json_atomic(OUT, {"benchmark": "features_order", "machine": MACHINE,
                            "python": platform.python_version(), "cases": results,
                            "not_run": "n=1M at d=2048 without PCA: the array alone is 8 GB "
                                       "on a shared 24 GiB box; 1M was generated in 50k "
                                       "chunks and PCA-reduced to 128 on the fly"})


if __name__ == "__main__":
    main()
