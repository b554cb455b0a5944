"""FoundationVision/Infinity's own ``autoregressive_infer_cfg`` (a checkout, ``--infinity-upstream DIR``) on the
Infinity stage's random weights, in the same process, through benchmarks/infinity_upstream.py (the module the
golden test data and the CPU benchmark use): flash-attn's varlen attention replaced by its exact PyTorch
stand-in (per-sequence SDPA: flash-attn is not installed on the GPU machine), upstream's torch.compile'd fused
norms run eagerly, timm/pytz stand-ins. Upstream's time therefore includes a per-prompt attention loop that
real flash-attn would not have, and uncompiled norms.

Upstream's model holds the very tensors of var_fast's model (``load_state_dict(assign=True)``: one copy of the
2 B weights on the GPU), and its greedy bits (top_k=1, float32) must equal var_fast's reference sampler's on
the same weights before its time is compared (``Verdict``, as for VAR's upstream).
"""
from __future__ import annotations

import contextlib
from typing import Dict

import torch

from .upstream import Verdict, compare_tokens

# torch.nn.init functions skipped while upstream's model is constructed: its weights are replaced by var_fast's
# at once, and 2 B parameters drawn on the CPU (where upstream constructs) would take most of a minute
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                   "xavier_normal_", "constant_", "zeros_", "ones_")


@contextlib.contextmanager
def no_parameter_init():
    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
    for name in _INIT_FUNCTIONS:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


class InfinityUpstream:
    """An upstream Infinity checkout's classes and loop, imported once (one checkout per process)."""

    def __init__(self, root: str):
        from benchmarks import infinity_upstream as iu
        self.iu = iu
        self.up = iu.import_upstream(root)

    def spec(self, model, vae, pixels: str):
        """Upstream's constructor arguments for var_fast's pair (``load_infinity``'s, with these shapes; ``pixels``
        is its ``pn``, the budget of the schedules it samples)."""
        c, v = model.cfg, vae.cfg
        if c.d_vae != v.codebook_dim:
            raise ValueError("the Infinity stage's upstream comparison is for pairs without spatial patchify")
        return self.iu.ModelSpec(
            name="gpu-check", depth=c.depth, embed_dim=c.embed_dim, num_heads=c.num_heads, block_chunks=c.block_chunks,
            codebook_dim=v.codebook_dim, apply_spatial_patchify=0, vae_base_ch=v.ch, vae_ch_mult=tuple(v.decoder_ch_mult),
            vae_num_res_blocks=v.num_res_blocks, seed=0, text_channels=c.text_channels,
            mlp_ratio=c.mlp_hidden / c.embed_dim, text_maxlen=c.text_maxlen,
            add_lvl_embeding_only_first_block=c.add_lvl_embeding_only_first_block,
            rope2d_normalized_by_hw=c.rope2d_normalized_by_hw, pn=pixels)

    def build(self, model, vae, pixels: str):
        """(upstream transformer, upstream VAE) on the models' device, the transformer holding var_fast's tensors."""
        device = model.pos_start.device
        spec = self.spec(model, vae, pixels)
        vae_sd = {k: v.detach().cpu() for k, v in vae.state_dict().items()}
        uvae = self.iu.build_vae(self.up, spec, vae_sd).to(device)
        with no_parameter_init():
            umodel = self.iu.build_infinity(self.up, spec, uvae, dict(model.state_dict()), assign=True)
        umodel.to(device)  # what the state dict does not hold (upstream's own buffers)
        umodel.rng = torch.Generator(device=device)  # upstream makes it on its dist module's device (the CPU here)
        return umodel, uvae

    def share(self, umodel, model, dtype: torch.dtype) -> None:
        """After var_fast's blocks went to ``dtype`` (api.half_precision_blocks): upstream's take the same tensors
        again, then upstream's own ``block.bfloat16()`` of load_infinity(bf16=1) (its norm weights become bf16)."""
        result = umodel.load_state_dict(dict(model.state_dict()), assign=True)
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(f"upstream: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
        if dtype != torch.float32:
            for block in umodel.unregistered_blocks:
                block.to(dtype)

    def sample(self, umodel, uvae, cond, schedule, dtype: torch.dtype, settings: Dict, seed: int = 0,
               ret_img: bool = False):
        """Upstream's loop as gen_one_img runs it (autocast to ``dtype`` on CUDA), decoding only with ret_img."""
        S = len(schedule)
        device_type = cond.features.device.type
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            return self.iu.run_autoregressive(
                umodel, uvae, cond.as_upstream(), scale_schedule=list(schedule), cfg_list=[settings["cfg"]] * S,
                tau_list=[settings["tau"]] * S, top_k=settings["top_k"], top_p=settings["top_p"],
                cfg_insertion_layer=[0], g_seed=seed, B=cond.batch_size, ret_img=ret_img)

    @torch.no_grad()
    def greedy_check(self, umodel, uvae, model, vae, cond, schedule, cfg: float) -> Verdict:
        """float32, top_k=1: upstream's bits of every scale against var_fast's reference sampler's."""
        from var_fast.infinity import infer_reference
        ref = infer_reference(model, vae, cond, schedule, cfg_list=cfg, tau_list=1.0, top_k=1, top_p=0.0, seed=0,
                              decode=False)
        run = self.sample(umodel, uvae, cond, schedule, torch.float32, dict(cfg=cfg, tau=1.0, top_k=1, top_p=0.0))
        return compare_tokens(ref.bits, run.bits)

