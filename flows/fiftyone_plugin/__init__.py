"""tinyloop's FiftyOne plugin (installed into the App's plugins dir by `tinyloop app start`).

- "Refine with clicks": runs the current detector (the newest finished
  models/iter-NNN/model.pt) on the selected samples (or the open one) with their clicks,
  refreshes `predictions` and the untouched boxes of `corrections`; boxes the annotator
  edited are never changed. The predictor is the model policy's (flows.model_policy): the
  project's tiling and the model's score threshold, so the App shows the boxes
  pre-annotation showed.
- "Boxes from clicks": each point the annotator drew in `box_clicks` (a small box of the
  object's class on an object with no box) becomes a box of that class in `corrections`,
  provenance `click_box`: the current model's candidate, else the class's size prior, else a
  box from the image around the point (flows.annotate.click_boxes). Boxes already there are
  never changed; a point inside a box of its class adds nothing.
- "Mark batch done": review_status=done for the batch, writes data/batches/NNN/done and
  resumes the Prefect flow run waiting for it (flows.human_wait.signal_done).

The work is done by flows.annotate.fiftyone_sync (tested without the App); this file only adapts
it to the operator API. The App server must be able to import `flows` (tinyloop app start sets
PYTHONPATH) and finds the project through the dataset's info["project_root"].
"""
import fiftyone.operators as foo
import fiftyone.operators.types as types


def _counts(*keys: str):
    """The App's view of an operator's result: one whole number per key."""
    outputs = types.Object()
    for key in keys:
        outputs.int(key, label=key)
    return types.Property(outputs)


def _targets(ctx):
    if ctx.selected:
        return list(ctx.selected)
    if ctx.current_sample:
        return [ctx.current_sample]
    return list(ctx.view.values("id"))


class RefineWithClicks(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(name="refine_with_clicks", label="Refine with clicks",
                                  description="Re-run the detector with this sample's clicks; "
                                              "your edited boxes stay as they are")

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view("info", types.Notice(label=f"Refine {len(_targets(ctx))} sample(s) with "
                                               "their clicks"))
        return types.Property(inputs)

    def execute(self, ctx):
        from flows.annotate import fiftyone_refine as frefine
        from flows import model_policy
        from flows.project.project import Project
        project = Project.open(ctx.dataset.info["project_root"])
        predictor = model_policy.predictor(project, model_policy.current_model(project.layout))
        counts = frefine.refine_samples(ctx.dataset, _targets(ctx),
                                      lambda path, clicks: predictor.predict(path, clicks))
        ctx.trigger("reload_samples")
        return counts

    def resolve_output(self, ctx):
        return _counts(*("samples", "replaced", "kept"))


class BoxesFromClicks(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(name="boxes_from_clicks", label="Boxes from clicks",
                                  description="Turn each point in box_clicks into a box of "
                                              "its class; existing boxes stay as they are")

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view("info", types.Notice(label=f"Boxes from the points of "
                                               f"{len(_targets(ctx))} sample(s)"))
        return types.Property(inputs)

    def execute(self, ctx):
        from flows.annotate import fiftyone_refine as frefine
        from flows.model_policy import project_click_boxes
        from flows.project.project import Project
        project = Project.open(ctx.dataset.info["project_root"])
        counts = frefine.boxes_from_clicks_samples(ctx.dataset, _targets(ctx),
                                                   project_click_boxes(project))
        ctx.trigger("reload_samples")
        return counts

    def resolve_output(self, ctx):
        return _counts(*("samples", "points", "boxes"))


class MarkBatchDone(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(name="mark_batch_done", label="Mark batch done",
                                  description="Tell the loop this batch is corrected")

    def resolve_input(self, ctx):
        inputs = types.Object()
        batches = sorted(set(b for b in ctx.view.values("batch") if b is not None))
        inputs.int("batch", label="Batch", required=True,
                   default=batches[-1] if batches else None)
        return types.Property(inputs)

    def execute(self, ctx):
        from flows.annotate import fiftyone_refine as frefine
        batch = int(ctx.params["batch"])
        resumed = frefine.mark_batch_done(ctx.dataset, ctx.dataset.info["project_root"], batch)
        return {"batch": batch, "flow_resumed": resumed}


def register(p):
    p.register(RefineWithClicks)
    p.register(BoxesFromClicks)
    p.register(MarkBatchDone)
