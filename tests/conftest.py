"""Shared test parametrization: devices, dtypes with per-dtype tolerances, the emulated CUDA kernels.

Devices of the ``device`` fixture:
  * ``cpu``: the CPU ops;
  * ``cuda``: the CUDA kernels on a GPU (skipped with a reason without one);
  * ``emu``: the same CUDA sources run on the CPU by the CUDA emulator (tests/emu): CPU tensors, and
    every ``var_fast.ops`` call goes to the emulated kernels. The fixture then returns ``"cpu"`` (where
    tensors live); ``request.node.callspec.id`` still names the device in reports.
``kernel_device`` is the CUDA code only (``cuda`` and ``emu``), for comparisons with the CPU ops, which
those tests call as ``torch.ops.var_fast.*``. ``device_description`` runs a test on the emulated kernels once
per GPU description of tests/emu/device.py (SM count, compute capability, shared memory), and
``emulated_gpu`` gives the helpers there (launch record, emulated CUDA graph capture).

``VAR_FAST_REQUIRE_EXTENSION=1`` (set by .ci/run) turns "the extension / the emulated build is not
available" from a skip into a failure.
"""
from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
CUDA_SKIP = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
REQUIRE_EXTENSION = os.environ.get("VAR_FAST_REQUIRE_EXTENSION") == "1"

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=[CUDA_SKIP, pytest.mark.cuda]),
           pytest.param("emu", id="emu", marks=[pytest.mark.emu])]
KERNEL_DEVICES = [pytest.param("cuda", id="cuda", marks=[CUDA_SKIP, pytest.mark.cuda]),
                  pytest.param("emu", id="emu", marks=[pytest.mark.emu])]
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


def pytest_configure(config):
    if REQUIRE_EXTENSION:
        from var_fast.native import extension as _ext
        if not _ext.available():
            raise pytest.UsageError(f"VAR_FAST_REQUIRE_EXTENSION=1 but var_fast._C does not load: {_ext.load_error()}")


@pytest.fixture(autouse=True)
def _float32_is_float32():
    """float32 comparisons on a GPU need true float32 math: cuDNN convolutions default to TF32, and
    matmul TF32 is a global switch something may have turned on."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def offline_hub(monkeypatch):
    """In this process: HF_HUB_OFFLINE=1 and HF_HUB_CACHE=<folder> as huggingface_hub reads them (at import)."""
    from huggingface_hub import constants

    def use(cache):
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return use


@pytest.fixture(scope="session")
def emu_library() -> str:
    """The emulated CUDA build (built incrementally into build/emu on first use)."""
    from emu import build
    try:
        return build.build()
    except Exception as err:  # no CUDA headers, no compiler
        if REQUIRE_EXTENSION:
            pytest.fail(f"the emulated CUDA build failed: {type(err).__name__}: {err}")
        pytest.skip(f"the emulated CUDA build is not available: {type(err).__name__}: {err}")


@pytest.fixture
def emulated(emu_library, monkeypatch):
    """Route var_fast.ops to the emulated CUDA kernels, and the fast sampler onto its CUDA code path."""
    from var_fast import ops
    from var_fast.fast_sampler import FastSampler
    from var_fast.native import extension
    if not extension.available():  # the CPU ops are what the emulated kernels are compared with
        pytest.skip(f"var_fast._C is not built: {extension.load_error()}")
    monkeypatch.setattr(ops, "_library", "var_fast_emu")
    monkeypatch.setattr(FastSampler, "attention_impl", staticmethod(lambda device: "native"))


@pytest.fixture
def emulated_gpu(emulated):
    """The emulated CUDA kernels (as ``emulated``) with the tests/emu/device.py helpers: the GPU description
    is an H100 again after the test, whatever it set."""
    from emu import device as emu_device
    emu_device.set_device(emu_device.H100)
    yield emu_device
    emu_device.set_device(emu_device.H100)


def _emu_description_params():
    from emu.device import DESCRIPTIONS
    return [pytest.param(d, id=d.name, marks=[pytest.mark.emu]) for d in DESCRIPTIONS]


@pytest.fixture(params=_emu_description_params())
def device_description(request, emulated_gpu):
    """Each GPU description of tests/emu/device.py in turn, on the emulated CUDA kernels (tensors on the CPU):
    for the tests of launch plans that depend on the device."""
    emulated_gpu.set_device(request.param)
    return request.param


def _tensor_device(request, name: str) -> str:
    if name == "emu":
        request.getfixturevalue("emulated")
        return "cpu"
    return name


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return _tensor_device(request, request.param)


@pytest.fixture(params=KERNEL_DEVICES)
def kernel_device(request) -> str:
    return _tensor_device(request, request.param)


@pytest.fixture
def device_name(request) -> str:
    """cpu, cuda or emu: what the test's ``device`` / ``kernel_device`` parameter runs on."""
    for name in ("device", "kernel_device"):
        if name in request.fixturenames:
            return request.node.callspec.params[name]
    return "cpu"


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model is an error: the argument checks under test must come before it."""
    import var_fast

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")
    monkeypatch.setattr(var_fast, "load", fail)


@pytest.fixture(params=DTYPES)
def dtype(request) -> torch.dtype:
    return request.param
