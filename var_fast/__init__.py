"""var_fast: fast sampling for VAR (Visual AutoRegressive) models.

    import var_fast
    sampler = var_fast.load("var_d16.pth", "vae_ch160v4096z32.pth")   # or var_fast.load() for the bundled model
    images = sampler.sample([207, 360], cfg=4.0, top_k=900, top_p=0.96, seed=0)   # (2, 3, 256, 256) in [0, 1]
"""
from __future__ import annotations

__version__ = "0.1.0"

from .api import load  # noqa: E402
from .checkpoint import CheckpointError  # noqa: E402
from .patch import patch, unpatch  # noqa: E402
from .sampler import Sampler  # noqa: E402


def build_info() -> dict:
    """Version, torch version, and whether/for which GPUs the native kernels were compiled."""
    import torch

    from .native import extension as _ext
    info = {"version": __version__, "torch_version": torch.__version__, "extension": False,
            "cuda_kernels": False, "cuda_archs": [], "extension_error": None}
    ext = _ext.extension()
    if ext is None:
        info["extension_error"] = _ext.load_error()
        return info
    built = ext.build_info()
    info.update(extension=True, torch_version_built=built["torch_version_built"],
                cuda_kernels=bool(built["cuda_kernels"]),
                cuda_archs=[a for a in built["cuda_archs"].replace(",", ";").split(";") if a])
    return info


__all__ = ["load", "Sampler", "patch", "unpatch", "build_info", "CheckpointError", "__version__"]
