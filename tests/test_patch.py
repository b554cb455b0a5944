"""var_fast.patch on a stand-in with the reference VAR's attribute layout.

The stand-in holds the deterministic weights of tests/model_factory.py under the upstream module
names, a ``vae_proxy`` tuple and an ``rng`` generator, like upstream ``models.var.VAR``; its own
``autoregressive_infer_cfg`` replays what the upstream code returned for these weights
(tests/data/golden_reference.pt). Patched, it must return the same images; unpatched, its own method.
"""
import os

import pytest
import torch
import torch.nn as nn

import var_fast
from model_factory import make_models

GOLDEN = torch.load(os.path.join(os.path.dirname(__file__), "data", "golden_reference.pt"), weights_only=True)


class StandInVAR(nn.Module):
    """Upstream attribute layout: the same submodules plus vae_proxy / vae_quant_proxy / rng."""

    def __init__(self, name):
        super().__init__()
        var, vae = make_models(name)
        self.name = name
        for child_name, child in var.named_children():
            setattr(self, child_name, child)
        for buf_name, buf in var.named_buffers(recurse=False):
            self.register_buffer(buf_name, buf)
        for p_name, p in var.named_parameters(recurse=False):
            self.register_parameter(p_name, p)
        self.vae_proxy = (vae,)
        self.vae_quant_proxy = (vae.quantize,)
        self.patch_nums, self.num_classes, self.num_heads = var.patch_nums, var.num_classes, var.num_heads
        self.rng = torch.Generator()
        self.calls = 0

    def autoregressive_infer_cfg(self, B, label_B, g_seed=None, cfg=1.5, top_k=0, top_p=0.0, more_smooth=False):
        self.calls += 1
        for case in GOLDEN[self.name]["cases"]:
            if (case["seed"], case["cfg"], case["top_k"], case["top_p"], case["more_smooth"]) == \
                    (g_seed, cfg, top_k, top_p, more_smooth):
                return case["image"].float()
        raise KeyError("no recorded upstream output for these arguments")


def _args(case):
    label = torch.tensor(case["label"]) if isinstance(case["label"], list) else case["label"]
    return dict(B=case["B"], label_B=label, g_seed=case["seed"], cfg=case["cfg"], top_k=case["top_k"],
                top_p=case["top_p"], more_smooth=case["more_smooth"])


@pytest.mark.parametrize("name", ["d2", "d3_shared"])
def test_patched_matches_upstream_and_unpatch_restores(name):
    module = StandInVAR(name)
    var_fast.patch(module)
    for case in GOLDEN[name]["cases"]:
        out = module.autoregressive_infer_cfg(**_args(case))
        torch.testing.assert_close(out, case["image"].float(), rtol=0, atol=2e-3)
    assert module.calls == 0  # the patched method never fell through to the original
    var_fast.unpatch(module)
    module.autoregressive_infer_cfg(**_args(GOLDEN[name]["cases"][0]))
    assert module.calls == 1


def test_patch_is_idempotent_and_positional_args_work():
    module = StandInVAR("d2")
    var_fast.patch(var_fast.patch(module))
    case = GOLDEN["d2"]["cases"][1]
    a = _args(case)
    out = module.autoregressive_infer_cfg(a["B"], a["label_B"], a["g_seed"], a["cfg"], a["top_k"], a["top_p"])
    torch.testing.assert_close(out, case["image"].float(), rtol=0, atol=2e-3)
    var_fast.unpatch(module)
    assert "autoregressive_infer_cfg" not in module.__dict__


def test_patch_rejects_non_var_module():
    with pytest.raises(TypeError, match="expects a VAR built by the reference code"):
        var_fast.patch(nn.Linear(2, 2))


def test_fast_patch_greedy_matches_upstream_tokens():
    """backend='fast': with top_k=1 the draw is deterministic, so the image equals upstream's greedy one."""
    module = StandInVAR("d2")
    var_fast.patch(module)
    want = module.autoregressive_infer_cfg(3, torch.tensor([1, 2, 3]), g_seed=0, cfg=2.0, top_k=1)
    var_fast.patch(module, backend="fast")
    got = module.autoregressive_infer_cfg(3, torch.tensor([1, 2, 3]), g_seed=5, cfg=2.0, top_k=1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    again = module.autoregressive_infer_cfg(3, 2, g_seed=5, cfg=2.0, top_k=20)
    assert torch.equal(again, module.autoregressive_infer_cfg(3, 2, g_seed=5, cfg=2.0, top_k=20))
    var_fast.unpatch(module)
    assert "_var_fast_fast" not in module.__dict__
