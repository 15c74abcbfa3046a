"""The whole params.yaml: every package's knobs, validated at start.

Each package owns its section's dataclass; this module only composes them. Run
`tinyloop params check` to validate a file, `tinyloop params show` to see every default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from c3det.config import C3DetParams
from features.config import FeaturesParams, OrderParams
from flows.project.config import AnnotateParams, FlowParams, SimulatorParams, WorkloadParams
from tinyloop.config import DataParams, TilingParams
from tinyloop.params import build, load_yaml


@dataclass
class ProjectParams:
    name: str = "tinyloop-demo"
    seed: int = 0
    dvc_remote: str = ".dvc-remote"  # a local directory by default; s3://... etc. work too


@dataclass
class Params:
    project: ProjectParams = field(default_factory=ProjectParams)
    data: DataParams = field(default_factory=DataParams)
    tiling: TilingParams = field(default_factory=TilingParams)
    features: FeaturesParams = field(default_factory=FeaturesParams)
    order: OrderParams = field(default_factory=OrderParams)
    c3det: C3DetParams = field(default_factory=C3DetParams)
    annotate: AnnotateParams = field(default_factory=AnnotateParams)
    simulator: SimulatorParams = field(default_factory=SimulatorParams)
    workload: WorkloadParams = field(default_factory=WorkloadParams)
    flows: FlowParams = field(default_factory=FlowParams)


def load_params(path: str | Path = "params.yaml", on_this_machine: bool = True) -> Params:
    """Read and validate params.yaml; raises ParamsError naming the bad key. With
    `on_this_machine`, what depends on the machine is resolved here, once: without a CUDA
    device the `c3det.cpu` keys replace the GPU schedule (C3DetParams.on_device)."""
    params = build(Params, load_yaml(path), file=str(path))
    if on_this_machine:
        from tinyloop.device import resolve_device
        params.c3det = params.c3det.on_device(resolve_device().type)
    return params
