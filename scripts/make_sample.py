"""Cut the bundled HIT-UAV sample (data/sample/hit-uav/) out of the full dataset, deterministically.

    .venv/bin/python scripts/make_sample.py [--source ../shared/datasets/hit-uav]
                                            [--out data/sample/hit-uav] [--train 48] [--val 12]

The slice keeps the source layout (images/, labels/, labels_rotated/, ImageSets/Main/) so the
same importer reads both. How images are picked (no random generator: the same source always
gives the same slice):

1. Only "clean" images are eligible: every VOC box is inside the 640x512 image with a
   positive area, and the roLabelImg file lists the same objects (same class names, same
   order) as the VOC file. The sample must import with zero problems.
2. Per split, a few images with DontCare regions and a few with OtherVehicle objects are
   taken first (the rare cases other code must handle: ignore regions, the rarest class).
3. The rest is filled greedily so the slice spreads over day/night, the 8 altitudes and the
   7 camera angles: each step takes the eligible image whose (night, altitude, angle) group
   is least represented so far, then whose night flag, altitude and angle are; ties are
   broken by a SHA-1 of the image id, which is fixed for all time.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "datasets" / "hit-uav"
DEFAULT_OUT = REPO / "data" / "sample" / "hit-uav"

# The attribution as the source README gives it; the sample's README must keep it verbatim.
ATTRIBUTION = (
    'Source: Suo et al., "HIT-UAV: A high-altitude infrared thermal dataset for Unmanned\n'
    'Aerial Vehicle-based object detection", Scientific Data 10, 227 (2023),\n'
    "doi:10.1038/s41597-023-02066-6. Licence: CC BY 4.0 (see LICENSE)."
)
RARE = {"DontCare": (3, 1), "OtherVehicle": (3, 1)}  # class -> images forced in (train, val)


@dataclass(frozen=True)
class Candidate:
    id: str
    split: str
    night: int
    altitude: int
    angle: int
    names: tuple[str, ...]  # object class names, VOC order

    @property
    def group(self) -> tuple[int, int, int]:
        return self.night, self.altitude, self.angle

    @property
    def tiebreak(self) -> str:
        return hashlib.sha1(self.id.encode()).hexdigest()


def _objects(xml_path: Path, box_tag: str) -> list[tuple[str, dict[str, float]]]:
    root = ET.parse(xml_path).getroot()
    out = []
    for obj in root.iter("object"):
        box = obj.find(box_tag)
        values = {child.tag: float(child.text) for child in box} if box is not None else {}
        out.append((obj.findtext("name", "").strip(), values))
    return out


def _is_clean(source: Path, image_id: str) -> bool:
    voc_path = source / "labels" / f"{image_id}.xml"
    rot_path = source / "labels_rotated" / f"{image_id}.xml"
    if not (voc_path.is_file() and rot_path.is_file()
            and (source / "images" / f"{image_id}.jpg").is_file()):
        return False
    root = ET.parse(voc_path).getroot()
    width = float(root.findtext("size/width", "0"))
    height = float(root.findtext("size/height", "0"))
    voc = _objects(voc_path, "bndbox")
    rot = _objects(rot_path, "robndbox")
    if not voc or [n for n, _ in voc] != [n for n, _ in rot]:
        return False
    for _, b in voc:
        if not (0 <= b["xmin"] < b["xmax"] <= width and 0 <= b["ymin"] < b["ymax"] <= height):
            return False
    return all(b.get("w", 0) > 0 and b.get("h", 0) > 0 for _, b in rot)


def candidates(source: Path) -> list[Candidate]:
    out = []
    for split in ("train", "val"):
        ids = (source / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        for image_id in sorted(ids):
            if not _is_clean(source, image_id):
                continue
            night, alt, angle, _, _frame = image_id.split("_")
            names = tuple(n for n, _ in _objects(source / "labels" / f"{image_id}.xml",
                                                 "bndbox"))
            out.append(Candidate(image_id, split, int(night), int(alt), int(angle), names))
    return out


def pick(pool: list[Candidate], n: int, forced: dict[str, int]) -> list[Candidate]:
    chosen: list[Candidate] = []
    for name, k in forced.items():
        having = sorted((c for c in pool if name in c.names and c not in chosen),
                        key=lambda c: c.tiebreak)
        # spread the forced images over different groups too
        for c in having:
            if sum(name in x.names for x in chosen) >= k:
                break
            if all(x.group != c.group for x in chosen):
                chosen.append(c)
    rest = [c for c in pool if c not in chosen]
    while len(chosen) < n and rest:
        groups = Counter(c.group for c in chosen)
        nights = Counter(c.night for c in chosen)
        alts = Counter(c.altitude for c in chosen)
        angles = Counter(c.angle for c in chosen)
        best = min(rest, key=lambda c: (groups[c.group], nights[c.night], alts[c.altitude],
                                        angles[c.angle], c.tiebreak))
        chosen.append(best)
        rest.remove(best)
    return sorted(chosen, key=lambda c: c.id)


def count_classes(source: Path, ids: list[str]) -> Counter:
    counts: Counter = Counter()
    for image_id in ids:
        counts.update(n for n, _ in _objects(source / "labels" / f"{image_id}.xml", "bndbox"))
    return counts


def object_sizes(source: Path, ids: list[str]) -> list[float]:
    """sqrt(w*h) of every VOC object (DontCare excluded)."""
    sizes = []
    for image_id in ids:
        for name, b in _objects(source / "labels" / f"{image_id}.xml", "bndbox"):
            if name != "DontCare":
                sizes.append(((b["xmax"] - b["xmin"]) * (b["ymax"] - b["ymin"])) ** 0.5)
    return sizes


def _size_line(sizes: list[float]) -> str:
    ordered = sorted(sizes)
    median = ordered[len(ordered) // 2]
    small = sum(v < 32 for v in sizes) / len(sizes)
    return f"median {median:.0f} px, {small:.0%} under 32 px"


def write_readme(out: Path, train: list[Candidate], val: list[Candidate], source: Path) -> None:
    every = train + val
    counts = count_classes(source, [c.id for c in every])
    all_ids = [p.stem for p in sorted((source / "labels").glob("*.xml"))]
    sample_sizes = _size_line(object_sizes(source, [c.id for c in every]))
    source_sizes = _size_line(object_sizes(source, all_ids))
    source_counts = count_classes(source, all_ids)

    def share(c: Counter, name: str) -> str:
        return f"{c[name] / sum(v for k, v in c.items() if k != 'DontCare'):.0%}"
    classes = ", ".join(f"{name} {counts[name]}"
                        for name in ("Person", "Car", "Bicycle", "OtherVehicle", "DontCare"))
    nights = Counter(c.night for c in every)
    text = f"""# HIT-UAV sample — {len(every)} real infrared drone images bundled with tinyloop

{ATTRIBUTION}

These images and labels are a slice of HIT-UAV, redistributed under CC BY 4.0 (full licence
text in LICENSE). Any copy of this sample, or any report showing its images, must keep the
attribution above.

## What this is
{len(train)} images from the published train split and {len(val)} from the val split, with their
labels, in the source layout:
- images/          JPEG, 640x512, single channel (PIL mode "L")
- labels/          Pascal VOC XML, axis-aligned boxes
- labels_rotated/  roLabelImg XML (`<robndbox>` cx, cy, w, h, angle in radians)
- ImageSets/Main/train.txt ({len(train)} ids), val.txt ({len(val)} ids)

Objects: {classes} (DontCare = regions to ignore, not a class).
Object size sqrt(w*h): {sample_sizes} (the whole 1490-image subset: {source_sizes}).
The slice holds a smaller share of Person, the smallest class ({share(counts, "Person")} of
its objects; {share(source_counts, "Person")} in the whole subset), so its objects are
somewhat larger on average.
Day images {nights[0]}, night images {nights[1]}; altitudes
{sorted({c.altitude for c in every})} m; camera angles {sorted({c.angle for c in every})} degrees.
File names carry capture metadata: `<night>_<altitude m>_<camera angle deg>_<?>_<frame>`.

It is tinyloop's default data (`data.source: data/sample/hit-uav` in params.yaml): big enough to
exercise import, ordering, training and the annotation loop end to end, small enough for git.

## How it was picked
By `scripts/make_sample.py` (deterministic, no random generator): only images whose VOC boxes
lie inside the image and whose roLabelImg file lists the same objects are eligible; per split
a few images with DontCare regions and a few with OtherVehicle objects are taken first; the
rest is filled greedily so the slice spreads evenly over day/night, altitudes and camera
angles, ties broken by a SHA-1 of the image id. Re-running the script on the same source
gives the same files.
"""
    (out / "README.md").write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="full HIT-UAV root")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the slice goes")
    ap.add_argument("--train", type=int, default=48, help="images from the train split")
    ap.add_argument("--val", type=int, default=12, help="images from the val split")
    args = ap.parse_args(argv)
    source, out = args.source, args.out
    if not (source / "ImageSets" / "Main" / "train.txt").is_file():
        print(f"error: {source} is not a HIT-UAV root (no ImageSets/Main/train.txt); "
              f"pass --source or set up ../shared/datasets/hit-uav", file=sys.stderr)
        return 2
    pool = candidates(source)
    picked = {}
    for split, n, col in (("train", args.train, 0), ("val", args.val, 1)):
        forced = {name: ks[col] for name, ks in RARE.items()}
        picked[split] = pick([c for c in pool if c.split == split], n, forced)

    if out.exists():
        shutil.rmtree(out)
    for sub in ("images", "labels", "labels_rotated", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for split, chosen in picked.items():
        for c in chosen:
            shutil.copy2(source / "images" / f"{c.id}.jpg", out / "images")
            shutil.copy2(source / "labels" / f"{c.id}.xml", out / "labels")
            shutil.copy2(source / "labels_rotated" / f"{c.id}.xml", out / "labels_rotated")
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{c.id}\n" for c in chosen))
    shutil.copy2(source / "LICENSE", out / "LICENSE")
    write_readme(out, picked["train"], picked["val"], source)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out}: {len(picked['train'])} train + {len(picked['val'])} val images, "
          f"{size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
