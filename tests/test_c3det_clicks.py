"""Click synthesis: the distribution of K, never inside ignore regions, classes right."""
import numpy as np
import torch

from c3det.clicks import click_order, clickable, clicks_for, synthesize_training_clicks


def _objects(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 400
    wh = 5 + torch.rand(n, 2, generator=g) * 20
    boxes = torch.cat([xy, xy + wh], dim=1)
    labels = torch.randint(1, 5, (n,), generator=g)
    return boxes, labels


def test_k_follows_min_of_uniform_and_object_count():
    boxes, labels = _objects(7)
    rng = np.random.default_rng(0)
    draws = 20000
    ks = np.array([len(synthesize_training_clicks(boxes, labels, None, rng, 20)[0])
                   for _ in range(draws)])
    # P(K = k) = 1/21 for k < 7, P(K = 7) = 14/21 (every Nu >= 7)
    expected = np.array([1 / 21] * 7 + [14 / 21])
    observed = np.bincount(ks, minlength=8) / draws
    assert ks.max() == 7
    assert np.abs(observed - expected).max() < 0.01


def test_zero_click_share_adds_samples_without_clicks():
    boxes, labels = _objects(30)
    rng = np.random.default_rng(1)
    ks = np.array([len(synthesize_training_clicks(boxes, labels, None, rng, 20, 0.5)[0])
                   for _ in range(10000)])
    # P(K = 0) = 0.5 + 0.5 / 21
    assert abs((ks == 0).mean() - (0.5 + 0.5 / 21)) < 0.02
    assert ks.max() == 20


def test_clicks_are_box_centres_with_class_indices_and_match_clicked_mask():
    boxes, labels = _objects(12, seed=3)
    rng = np.random.default_rng(2)
    for _ in range(200):
        clicks, clicked = synthesize_training_clicks(boxes, labels, None, rng, 20)
        assert clicks.shape[1] == 3 and int(clicked.sum()) == len(clicks)
        centres = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2,
                               (boxes[:, 1] + boxes[:, 3]) / 2], dim=1)
        for x, y, c in clicks.tolist():
            j = int(torch.argmin(((centres - torch.tensor([x, y])) ** 2).sum(1)))
            assert clicked[j]
            assert torch.allclose(centres[j], torch.tensor([x, y]))
            assert int(c) == int(labels[j]) - 1  # class index 0..C-1, labels 1..C
        # without replacement: no object clicked twice
        assert len({(round(x, 3), round(y, 3)) for x, y, _ in clicks.tolist()}) == len(clicks)


def test_objects_in_ignore_regions_are_never_clicked():
    boxes = torch.tensor([[10., 10, 20, 20], [100, 100, 110, 110], [200, 200, 220, 220]])
    labels = torch.tensor([1, 2, 3])
    ignore = torch.tensor([[90., 90, 130, 130]])
    assert clickable(boxes, ignore).tolist() == [True, False, True]
    rng = np.random.default_rng(0)
    for _ in range(500):
        clicks, clicked = synthesize_training_clicks(boxes, labels, ignore, rng, 20)
        assert not clicked[1]
        for x, y, _ in clicks.tolist():
            assert not (90 <= x <= 130 and 90 <= y <= 130)
    for s in range(50):
        order = click_order(boxes, ignore, np.random.default_rng(s))
        assert sorted(order.tolist()) == [0, 2]


def test_click_noise_moves_clicks_by_about_sigma():
    boxes, labels = _objects(500, seed=5)
    exact = clicks_for(boxes, labels, torch.arange(500))
    noisy = clicks_for(boxes, labels, torch.arange(500), noise_px=3.0,
                       rng=np.random.default_rng(0))
    d = (noisy[:, :2] - exact[:, :2])
    assert abs(float(d.std()) - 3.0) < 0.3
    assert torch.equal(noisy[:, 2], exact[:, 2])
