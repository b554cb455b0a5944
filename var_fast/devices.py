"""The device a model runs on: ``resolve_device`` (shared by var_fast.load for VAR and for Infinity)."""
from __future__ import annotations

import torch


def resolve_device(device, cpu_fix: str = "device='cpu'") -> torch.device:
    """``device`` (None: cuda when available, else cpu) as a torch.device; a CUDA device without a GPU is a
    RuntimeError whose fix is ``cpu_fix`` (the command line passes "--device cpu")."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a device: use cpu, cuda or cuda:<index> ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was asked for, but no CUDA GPU is available "
                           f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}); use {cpu_fix}")
    return device
