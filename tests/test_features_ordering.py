"""The orderings registry: the shipped orderings by name, and a new one added through the
registry alone orders a pool with order_pool."""
import numpy as np
import pytest

from features import ordering as registry
from features.config import OrderParams
from features.order import order_pool
from features.ordering import Ordering, OrderError


def test_shipped_orderings_and_what_they_read():
    assert registry.ordering_names() == ("dissimilar", "similar", "random", "temporal")
    assert [registry.ordering(n).uses_embeddings for n in registry.ordering_names()] == \
        [True, True, False, False]
    with pytest.raises(OrderError, match="unknown order.method 'best'"):
        registry.ordering("best")


def test_a_new_ordering_through_the_registry_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(registry.ORDERINGS, "_entries", dict(registry.ORDERINGS.entries()))
    registry.register(Ordering("reverse_id", uses_embeddings=False,
                               order=lambda req: np.argsort([req.ids[r] for r in req.new_rows])[::-1]))
    ids = [f"img{i}" for i in range(5)]
    result = order_pool(None, ids, OrderParams(method="reverse_id", first_batch_size=2,
                                               batch_size=2), tmp_path / "order.json")
    assert sorted(result.order, key=lambda i: result.order[i]["position"]) == ids[::-1]
    assert result.order["img4"]["batch"] == 1 and result.order["img0"]["batch"] == 3
