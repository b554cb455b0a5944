"""Loading the native extension, once, and saying which path var_fast runs on.

``VAR_FAST_EXTENSION=/path/to/_C*.so`` loads a development build instead of the installed one
(see scripts/dev_build.py).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Optional

_module: Optional[ModuleType] = None
_error: Optional[str] = None
_loaded = False


def extension() -> Optional[ModuleType]:
    """The loaded ``var_fast._C`` module, or None (then ``load_error()`` says why)."""
    global _module, _error, _loaded
    if _loaded:
        return _module
    _loaded = True
    path = os.environ.get("VAR_FAST_EXTENSION")
    try:
        import torch  # noqa: F401  (the extension links against libtorch)
        if path:
            loader = importlib.machinery.ExtensionFileLoader("var_fast._C", path)
            spec = importlib.util.spec_from_file_location("var_fast._C", path, loader=loader)
            module = importlib.util.module_from_spec(spec)
            loader.exec_module(module)
            sys.modules["var_fast._C"] = module
        else:
            from .. import _C as module  # type: ignore[attr-defined]
        from . import fake_kernels  # noqa: F401  (fake kernels for torch.compile)
        _module = module
    except Exception as err:  # not built, or built against another torch
        _error = f"{type(err).__name__}: {err}"
        _module = None
    return _module


def available() -> bool:
    return extension() is not None


def load_error() -> Optional[str]:
    extension()
    return _error


def cuda_kernels() -> bool:
    ext = extension()
    return bool(ext is not None and ext.build_info().get("cuda_kernels"))


_announced = set()


def announce(path: str) -> None:
    """Say once per process (on stderr) which implementation var_fast runs on."""
    if path not in _announced and not os.environ.get("VAR_FAST_QUIET"):
        _announced.add(path)
        print(f"[var_fast] {path}", file=sys.stderr, flush=True)


def require() -> ModuleType:
    ext = extension()
    if ext is None:
        raise RuntimeError(f"var_fast's native extension is not available ({_error}); build it with "
                           f"`pip install --no-build-isolation -e .` or use backend='reference'")
    return ext
