"""Knobs of the annotation side and the loop (sections annotate, simulator, workload, flows)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AnnotateParams:
    dataset_name: str = "tinyloop"
    app_port: int = 5151
    app_address: str = "127.0.0.1"


@dataclass
class SimulatorParams:
    click_sigma: float = 3.0


@dataclass
class WorkloadParams:
    box_seconds: float = 7.0  # T: drawing one box from scratch
    iou: float = 0.5


@dataclass
class FlowParams:
    iterations: int = 3
