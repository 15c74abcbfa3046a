"""The one place a device name is turned into a torch device ("auto": CUDA when present).

Every "auto" device (c3det's training and inference, c3det.yolo.device, features.device,
order.device, flows' CPU schedule) is resolved here, so they all agree on one machine.
torch is imported when a device is asked for, not when this module is (tinyloop/ imports
no torch at import time).
"""
from __future__ import annotations


class DeviceError(ValueError):
    """A CUDA device was asked for on a machine without one."""


def resolve_device(spec=None, key: str = "device"):
    """`spec` ("auto" or None, "cpu", "cuda", "cuda:N", "mps", or a torch.device) -> the
    torch.device it names; "auto" and None are CUDA when present, else the CPU. Asking for
    CUDA where there is none is a DeviceError naming `key` (the params key it came from)."""
    import torch
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{key} is {str(spec)!r} but no CUDA device is present; use auto "
                          "or cpu")
    return device


def has_cuda() -> bool:
    """Does "auto" mean CUDA on this machine?"""
    return resolve_device().type == "cuda"
