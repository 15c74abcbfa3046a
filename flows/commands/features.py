"""`tinyloop data embed` and `tinyloop data order`: the DVC stages `features` and `order`.

Both read params.yaml (features / order sections) and the pool manifest that import wrote,
and write their outputs under data/ (see flows/project/layout.py); both are incremental.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from flows.commands.base import CliProject, Verb, project_option


ROOT_HELP = "project directory (default: the directory of --params, else .)"


def verbs() -> list[Verb]:
    return [
        Verb("data", "embed", cmd_data_embed, _embed_arguments, alias="embed",
             help="embed every pool image (EfficientNet-Lite, ResNet or SimNet) into "
                  "data/features/",
             description="Embed every image of the pool (data/pool/manifest.json) with the "
                         "extractor in params.yaml `features` (efficientnet_lite0/1/2, "
                         "resnet18, resnet50 or simnet; SimNet is trained on the pool first "
                         "when its checkpoint is missing). Writes data/features/embeddings.npy "
                         "(N x D float32, L2-normalised, memory-mappable) and ids.json. "
                         "Incremental: only images not yet in the store are embedded. "
                         "Unreadable images are listed and skipped "
                         "(data/features/problems.json). This is the DVC stage `features`."),
        Verb("data", "order", cmd_data_order, _order_arguments, alias="order",
             help="order the pool and cut it into batches (data/order.json)",
             description="Order the whole pool with params.yaml `order` (dissimilar = "
                         "farthest-first, similar, random, temporal: features/ordering.py "
                         "lists them) and cut the order into "
                         "batches: the first holds order.first_batch_size images, the rest "
                         "order.batch_size. Writes data/order.json {image_id: {position, "
                         "batch}} atomically. When the pool has grown, existing positions "
                         "never move; new images are appended in new batches. This is the "
                         "DVC stage `order`."),
    ]


def _embed_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p, "--root", help=ROOT_HELP)
    p.add_argument("--retrain-simnet", action="store_true",
                   help="train SimNet again even when its checkpoint exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _order_arguments(p: argparse.ArgumentParser) -> None:
    project_option(p, "--root", help=ROOT_HELP)


def _setup(project: CliProject):
    """(params, layout, pool); the params file must exist (these are DVC stages of a
    project), and so must the pool."""
    from tinyloop.cocofile import read_labels
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    params = project.require_params()
    layout = project.layout
    if not layout.manifest.exists():
        raise FileNotFoundError(f"{layout.manifest} not found; import the pool first "
                                "(`tinyloop ingest`)")
    pool = read_labels(layout.manifest)
    return params, layout, pool


def _image_root(params, layout, pool) -> Path:
    source = Path(params.data.source)
    root = source if source.is_absolute() else layout.root / source
    if not root.is_dir() and pool.info.get("dataset_root"):
        root = Path(pool.info["dataset_root"])
    return root


def cmd_data_embed(args: argparse.Namespace, project: CliProject) -> int:
    from features.embed import EmbedError, update_store
    from features.extractors import WeightsError
    from features.simnet import ensure_simnet
    from tinyloop.params import ParamsError
    try:
        params, layout, pool = _setup(project)
        fp = params.features
        image_root = _image_root(params, layout, pool)
        fp, history = ensure_simnet(
            fp, layout.root, lambda: [image_root / im.image.path for im in pool.images],
            retrain=args.retrain_simnet, progress=not args.no_progress)
        if history:
            print(f"SimNet trained: loss {history['epoch_loss'][0]:.4f} -> "
                  f"{history['epoch_loss'][-1]:.4f}, saved to {fp.simnet.checkpoint}")
        vectors, ids, report = update_store(pool, image_root, fp, layout.features,
                                            progress=not args.no_progress)
    except (ParamsError, EmbedError, WeightsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"{layout.embeddings}: {vectors.shape[0]} x {vectors.shape[1]}")
    return 0 if len(ids) else 1


def cmd_data_order(args: argparse.Namespace, project: CliProject) -> int:
    from features.embed import load_store
    from features.order import OrderError, order_pool
    from features.ordering import ordering
    from tinyloop.params import ParamsError
    try:
        params, layout, pool = _setup(project)
        records = [im.image for im in pool.images]
        op = params.order
        if ordering(op.method).uses_embeddings:
            store = load_store(layout.features)
            if store is None:
                raise OrderError(f"no embeddings in {layout.features}; run `tinyloop embed`")
            vectors, ids, _ = store
        else:
            vectors, ids = None, [r.id for r in records]
        result = order_pool(vectors, ids, op, layout.order, records=records)
        unembedded = sorted({r.id for r in records} - set(ids))
        if unembedded:
            result.notes.append(f"{len(unembedded)} pool images have no embedding (unreadable;"
                                f" see {layout.features}/problems.json) and are not ordered: "
                                f"{', '.join(unembedded[:5])}")
    except (ParamsError, OrderError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(result.summary())
    print(f"wrote {layout.order}")
    return 0
