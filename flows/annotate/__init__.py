"""Annotators' side: annotation stores, FiftyOne sync and store, the App, MongoDB, the App
plugin."""
