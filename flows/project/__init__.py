"""A project's files: layout, params, config, versioning, init, pool import."""
