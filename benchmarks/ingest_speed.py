"""Import speed on the real HIT-UAV subset (1490 JPEG 640x512 "L" images, 15 022 objects).

Cases (each run `--repeat` times, the median reported; files are in the page cache after the
first run, so these are warm-cache numbers):
- `voc+rotated decode`   the default: VOC + roLabelImg merge, every image fully decoded
- same with 1 and 2 worker threads (Pillow releases the GIL while decoding)
- `voc+rotated header`   `data.verify_images: header` (sizes only, no decode)
- `rolabelimg decode`    roLabelImg labels alone
- `baseline`             the bare minimum without any checks: ElementTree-parse both XML
                         files and Pillow-decode each image in a loop (what the import costs
                         on top of reading the data)
- `load_image`           tinyloop.images.load_image -> float32 (3, H, W), images/s

    nice -n 10 .venv/bin/python benchmarks/ingest_speed.py [--repeat 3]
Writes benchmarks/results/ingest_speed.json and docs/img/ingest_speed.png.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "ingest_speed.json"
PLOT = ROOT / "docs" / "img" / "ingest_speed.png"
MACHINE = "2-core CPU, 24 GiB, no GPU (dev box, shared with other jobs)"


def hituav() -> Path:
    env = os.environ.get("TINYLOOP_HITUAV")
    return Path(env) if env else ROOT.parent / "shared" / "datasets" / "hit-uav"


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def baseline(root: Path) -> int:
    from PIL import Image
    n = 0
    for xml in sorted((root / "labels").glob("*.xml")):
        ET.parse(xml)
        ET.parse(root / "labels_rotated" / xml.name)
        with Image.open(root / "images" / (xml.stem + ".jpg")) as im:
            im.load()
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from tinyloop.config import DataParams
    from tinyloop.images import load_image
    from tinyloop.ingest import import_dataset

    root = hituav()
    default = DataParams()
    cases = [
        ("voc+rotated decode, 1 thread", default, 1),
        ("voc+rotated decode, 2 threads", default, 2),
        ("voc+rotated header, 1 thread", replace(default, verify_images="header"), 1),
        ("rolabelimg decode, 2 threads", replace(default, format="rolabelimg",
                                                 labels="labels_rotated"), 2),
    ]
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = []
    for name, data, workers in cases:
        seconds, (labels, report) = timed(
            lambda: import_dataset(root, data, progress=False, workers=workers), args.repeat)
        assert report.ok and len(labels) == 1490, report.summary()
        rows.append({"case": name, "images": len(labels), "seconds": round(seconds, 3),
                     "images_per_s": round(len(labels) / seconds, 1)})
        print(rows[-1], flush=True)
    seconds, n = timed(lambda: baseline(root), args.repeat)
    rows.append({"case": "baseline: parse XML + decode, no checks", "images": n,
                 "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 1)})
    print(rows[-1], flush=True)
    paths = sorted((root / "images").glob("*.jpg"))[:300]
    seconds, _ = timed(lambda: [load_image(p) for p in paths], args.repeat)
    rows.append({"case": "load_image -> float32 (3,H,W)", "images": len(paths),
                 "seconds": round(seconds, 3), "images_per_s": round(len(paths) / seconds, 1)})
    print(rows[-1], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"benchmark": "ingest_speed", "machine": MACHINE,
                               "python": platform.python_version(),
                               "dataset": "HIT-UAV subset, 1490 JPEG 640x512 mode L",
                               "repeat": args.repeat,
                               "load_average_1min": round(os.getloadavg()[0], 2),
                               "cases": rows}, indent=1) + "\n")
    plot(rows)
    print(f"wrote {OUT} and {PLOT}")


def plot(rows: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["case"] for r in rows]
    ax.barh(names, [r["images_per_s"] for r in rows], color="#4477aa")
    for i, r in enumerate(rows):
        ax.text(r["images_per_s"], i, f" {r['images_per_s']:.0f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("images / s (HIT-UAV, 640x512 JPEG, warm cache, 2-core CPU)")
    ax.set_title("Import speed")
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)


if __name__ == "__main__":
    main()
