"""The fast sampler's per-scale work under an emulated CUDA graph capture (tests/emu/device.py): the pass a
CUDA graph captures (every block and the head: FastSampler.scale_logits), the sampling op and the quantizer
step, each called inside a capture that fails on a device read or a host synchronisation. The tokens are
those of the same sampler without captures."""
from __future__ import annotations

import pytest
import torch

from model_factory import make_models

pytestmark = pytest.mark.emu


def test_fast_sampler_scale_work_never_waits_for_the_device(emulated_gpu, monkeypatch):
    from var_fast import ops
    from var_fast.fast_sampler import FastSampler

    var, vae = make_models("d2")
    sampler = FastSampler(var, vae, cuda_graphs=False)
    labels = torch.tensor([1, 7])
    _, expected = sampler.sample(labels, seed=3, cfg=2.0, top_k=20, top_p=0.9)

    calls = []

    def captured(fn):
        def run(*args, **kwargs):
            calls.append(fn.__name__)
            with emulated_gpu.emulated_capture():
                return fn(*args, **kwargs)
        return run

    monkeypatch.setattr(sampler, "scale_logits", captured(sampler.scale_logits))
    monkeypatch.setattr(ops, "sample_cfg_top_k_top_p", captured(ops.sample_cfg_top_k_top_p))
    monkeypatch.setattr(ops, "quant_sampler_step", captured(ops.quant_sampler_step))
    _, tokens = sampler.sample(labels, seed=3, cfg=2.0, top_k=20, top_p=0.9)
    scales = len(var.patch_nums)
    assert sorted(set(calls)) == ["quant_sampler_step", "sample_cfg_top_k_top_p", "scale_logits"]
    assert len(calls) == 3 * scales
    assert all(torch.equal(a, b) for a, b in zip(tokens, expected))
