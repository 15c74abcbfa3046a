"""The FiftyOne dataset's fields and label schemas (see fiftyone_sync.py for what each
field holds): the field names, the persistent dataset, the App's Annotate-tab schemas."""
from __future__ import annotations

from dataclasses import field


CORRECTIONS = "corrections"
PREDICTIONS = "predictions"
GROUND_TRUTH = "ground_truth"
CLICKS = "clicks"
NEW_CLICKS = "new_clicks"
# points (small boxes) on objects with no box yet; "Boxes from clicks" turns each into a box
BOX_CLICKS = "box_clicks"
NEEDS_FIX = "needs-fix"
ORIENTED_SUFFIX = "_oriented"
_EPS = 1e-9


def oriented(field: str) -> str:
    """The Polylines field that shows the oriented boxes of the Detections field `field`."""
    return field + ORIENTED_SUFFIX


OBJECT_FIELDS = (GROUND_TRUTH, PREDICTIONS, CORRECTIONS)  # detections + oriented polylines
# why an image came in its batch (order.select; flows/project/selection_record.py): sort by
# the score, filter by the strategy, read the reason
SELECTION_FIELDS = {"selection_strategy": "StringField", "selection_score": "FloatField",
                    "selection_reason": "StringField"}


# --- the dataset ------------------------------------------------------------------------
def get_dataset(name: str, create: bool = True):
    """The persistent dataset `name` (FiftyOne must be configured: mongo.ensure_mongo)."""
    import fiftyone as fo
    if fo.dataset_exists(name):
        ds = fo.load_dataset(name)
        _add_oriented_fields(ds)
        _add_selection_fields(ds)
        _add_box_clicks_field(ds)
        return ds
    if not create:
        raise KeyError(f"no FiftyOne dataset {name!r}; run `tinyloop app sync` first")
    ds = fo.Dataset(name, persistent=True)
    ds.add_sample_field("image_id", fo.StringField)
    ds.add_sample_field("batch", fo.IntField)
    ds.add_sample_field("order_position", fo.IntField)
    ds.add_sample_field("review_status", fo.StringField)
    ds.add_sample_field("review_priority", fo.FloatField)
    ds.add_sample_field("problems", fo.ListField, subfield=fo.StringField)
    for name_ in (GROUND_TRUTH, PREDICTIONS, CORRECTIONS, NEW_CLICKS):
        ds.add_sample_field(name_, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    ds.add_sample_field(CLICKS, fo.EmbeddedDocumentField, embedded_doc_type=fo.Keypoints)
    _add_box_clicks_field(ds)
    _add_oriented_fields(ds)
    _add_selection_fields(ds)
    ds.create_index("image_id", unique=True)
    return ds


def _add_oriented_fields(ds) -> None:
    """The Polylines fields; also on datasets created before oriented boxes were shown."""
    import fiftyone as fo
    for name in OBJECT_FIELDS:
        if not ds.has_sample_field(oriented(name)):
            ds.add_sample_field(oriented(name), fo.EmbeddedDocumentField,
                                embedded_doc_type=fo.Polylines)


def _add_box_clicks_field(ds) -> None:
    """The points "Boxes from clicks" reads; also on datasets created before click mode."""
    import fiftyone as fo
    if not ds.has_sample_field(BOX_CLICKS):
        ds.add_sample_field(BOX_CLICKS, fo.EmbeddedDocumentField,
                            embedded_doc_type=fo.Detections)


def _add_selection_fields(ds) -> None:
    """The selection fields; also on datasets created before selection existed."""
    import fiftyone as fo
    for name, kind in SELECTION_FIELDS.items():
        if not ds.has_sample_field(name):
            ds.add_sample_field(name, getattr(fo, kind))


def set_annotation_schemas(ds, classes: list[str]) -> None:
    """Label schemas that make `corrections`, its oriented polylines, `new_clicks` and
    `box_clicks` editable in the Annotate tab."""
    schemas = {}
    editable = [CORRECTIONS, oriented(CORRECTIONS), NEW_CLICKS, BOX_CLICKS]
    for name in editable:
        schema = ds.generate_label_schemas(name, scan_samples=False)
        schema["classes"] = list(classes)
        schema["component"] = "dropdown"
        schemas[name] = schema
    ds.set_label_schemas(schemas)
    ds.activate_label_schemas(editable)
