"""The simulated annotator driving a real (tiny, untrained) c3det Predictor end to end."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from c3det.config import C3DetParams  # noqa: E402
from c3det.model import build_model  # noqa: E402
from c3det.predict import Predictor  # noqa: E402
from flows.annotate.file_store import FileStore  # noqa: E402
from flows.project.config import SimulatorParams, WorkloadParams  # noqa: E402
from flows.accounting.simulator import simulate_batch  # noqa: E402
from flows.accounting.workload import batch_workload  # noqa: E402
from tinyloop.annotations import ImageLabels, LabelSet  # noqa: E402
from tinyloop.cocofile import read_labels  # noqa: E402
from tinyloop.synthetic import make_synthetic  # noqa: E402


def test_simulator_with_a_real_c3det_predictor(tmp_path):
    torch.manual_seed(0)
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    try:
        truth, pixels = make_synthetic(1, size=(64, 64), objects_per_image=(3, 3),
                                       object_size=(8, 16), seed=3)
        model = build_model("c3det", len(truth.categories), C3DetParams(
            rpn_proposals_train=200, rpn_proposals_test=100, roi_batch_size=64)).eval()
        predictor = Predictor(model, truth.categories, model_version="tiny-untrained")
        images = {im.id: px for im, px in zip(truth, pixels)}
        calls = []

        def predict(image_id, clicks):
            calls.append(len(clicks))
            return predictor.predict(images[image_id], clicks)

        pre = LabelSet(truth.categories,
                       [ImageLabels(im.image, predict(im.id, [])) for im in truth])
        store = FileStore(tmp_path)
        store.open_batch(2, pre)
        params = SimulatorParams(rounds=2, clicks_per_round=2, click_sigma=1.0, seed=1)
        logs = simulate_batch(store, 2, truth, predict, params, progress=False)
        final = store.pull(2)
    finally:
        torch.set_num_threads(old)
    # the untrained model finds nothing right: round 1 clicks the 2 largest of the 3 objects,
    # round 2 (if the model's output after 2 clicks still misses the 3rd) clicks the last
    assert calls[:2] == [0, 2] and calls[2:] in ([], [3])
    assert len(logs[0].rounds) == len(calls) - 1
    # every click ends with a click-refined box of its class covering it (c3det's guarantee)
    refined = read_labels(store.refined_path(2)).by_id()
    for im in final:
        for c in im.clicks:
            assert any(a.provenance.source == "click_refined" and a.category == c.category
                       and a.box.contains(c.x, c.y) for a in refined[im.id].annotations)
    # the corrected labels are exactly the ground truth
    for got, want in zip(final, truth):
        assert {(a.category, a.box) for a in got.annotations} == \
            {(a.category, a.box) for a in want.annotations}
    w = batch_workload(read_labels(store.layout.preannotations(2)), final, WorkloadParams(),
                       first_batch=False, refined=read_labels(store.refined_path(2)))
    assert w["clicks"] == calls[-1] and w["objects"] == sum(len(i.annotations) for i in truth)
