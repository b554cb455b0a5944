"""Shared test parametrization: devices (CUDA skipped with a reason when absent), dtypes with
per-dtype tolerances, and small reference-format model factories."""
from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
CUDA_SKIP = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=[CUDA_SKIP, pytest.mark.cuda])]
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16"),
          pytest.param(torch.bfloat16, id="bf16")]

# (rtol, atol) per dtype of the inputs, for results accumulated in float32
TOLERANCES = {
    torch.float32: (3e-4, 1e-3),
    torch.float16: (3e-3, 5e-3),
    torch.bfloat16: (1e-2, 5e-2),
}


def tol(dtype: torch.dtype) -> dict:
    rtol, atol = TOLERANCES[dtype]
    return dict(rtol=rtol, atol=atol)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(params=DTYPES)
def dtype(request) -> torch.dtype:
    return request.param
