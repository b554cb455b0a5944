"""The compute dtype: what ``dtype=None`` / ``"auto"`` means, and the names the CLI and ``load`` accept.

bfloat16 on CUDA (the transformer and the VQVAE decoder; logits, sampling and the quantizer stay in
float32), float32 on the CPU, where bfloat16 matmuls and convolutions are emulated and slow, and where
float32 keeps the reference backend token for token the upstream code.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

AUTO = "auto"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
AUTO_HELP = "auto: bfloat16 on CUDA, float32 on the CPU"


def default_dtype(device: Union[str, torch.device, None]) -> torch.dtype:
    """The compute dtype ``dtype=None`` / ``"auto"`` resolves to on ``device``."""
    return torch.bfloat16 if torch.device(device or "cpu").type == "cuda" else torch.float32


def resolve_dtype(dtype: Union[None, str, torch.dtype], device: Optional[Union[str, torch.device]] = None) -> torch.dtype:
    """None / "auto" -> ``default_dtype(device)``; a name from DTYPES or a torch dtype -> itself."""
    if dtype is None or dtype == AUTO:
        return default_dtype(device)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be {AUTO!r} or one of {sorted(DTYPES)}, got {dtype!r}")
        return DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be None ('auto'), torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
