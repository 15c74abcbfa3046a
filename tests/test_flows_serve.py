"""`tinyloop serve`: deployments with the cron schedules of params.yaml."""
from __future__ import annotations

from flows.project.init import init_project, set_params
from flows.serve import deployments


def test_deployments_carry_the_params_schedules(tmp_path):
    (tmp_path / "data").mkdir()
    lay = init_project(tmp_path / "proj", source=str(tmp_path / "data"))
    set_params(lay.params, {"flows.schedules.retrain": "30 3 * * 1",
                            "flows.schedules.check_batches": ""})
    deps = {d.name: d for d in deployments(str(lay.root))}
    assert set(deps) == {"retrain-proj", "check-batches-proj"}
    retrain = deps["retrain-proj"]
    assert [s.schedule.cron for s in retrain.schedules] == ["30 3 * * 1"]
    assert retrain.parameters == {"root": str(lay.root)}
    assert not deps["check-batches-proj"].schedules   # "" switches a schedule off
