"""The reference sampling loop: the semantics of upstream ``VAR.autoregressive_infer_cfg``.

Same ops in the same order, the same use of the random generator, the growing KV cache by
concatenation: in float32 this reproduces the reference code token for token and pixel for pixel.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ..models.blocks import KVCache
from ..models.var import VAR
from ..models.vqvae import VQVAE
from ..schedules import Schedule, per_scale
from .sampling import gumbel_softmax, sample_top_k_top_p_

TeacherForce = Callable[[int, torch.Tensor, Optional[torch.Tensor]], Tuple[torch.Tensor, Optional[torch.Tensor]]]


def random_labels(num_classes: int, B: int, device, rng: Optional[torch.Generator]) -> torch.Tensor:
    """Uniform random classes, drawn from ``rng`` as the reference does."""
    uniform = torch.full((1, num_classes), fill_value=1.0 / num_classes, dtype=torch.float32, device=device)
    return torch.multinomial(uniform, num_samples=B, replacement=True, generator=rng).reshape(B)


def smooth_tau(ratio: float) -> float:
    """Gumbel temperature of ``more_smooth`` at progress ``ratio`` (MaskGIT's schedule, as upstream)."""
    return max(0.27 * (1 - ratio * 0.95), 0.005)


class ScaleState:
    """What the loop carries from one scale to the next for one transformer: its condition, level and
    position embeddings, KV caches and next input; f_hat (shared with a collaborating model), the tokens
    so far and the Cvae-space inputs of the scales after the first (CoDe's drafted "token hub")."""

    def __init__(self, var: VAR, label_B: torch.Tensor, f_hat: Optional[torch.Tensor] = None):
        B = label_B.shape[0]
        self.var = var
        self.cond_BD = var.class_emb(torch.cat((label_B, torch.full_like(label_B, fill_value=var.num_classes)), dim=0))
        self.lvl_pos = var.level_pos()
        self.first_map = (self.cond_BD.unsqueeze(1).expand(2 * B, var.first_l, -1)
                          + var.pos_start.expand(2 * B, var.first_l, -1) + self.lvl_pos[:, :var.first_l])
        self.next_map = self.first_map
        pn = var.patch_nums[-1]
        self.f_hat = self.cond_BD.new_zeros(B, var.Cvae, pn, pn) if f_hat is None else f_hat
        self.caches = [KVCache() for _ in var.blocks]
        self.cur_L = 0
        self.tokens: List[torch.Tensor] = []
        self.inputs: List[torch.Tensor] = []  # (B, pn*pn, Cvae) input of scales 1, 2, ...


def advance(state: ScaleState, vae: VQVAE, si: int, logits: torch.Tensor, rng: Optional[torch.Generator],
            top_k: int, top_p: float, temperature: float, more_smooth: bool,
            teacher_force: Optional[TeacherForce] = None, idx_Bl: Optional[torch.Tensor] = None) -> None:
    """One scale after its CFG-mixed logits (B, l, V): draw (unless ``idx_Bl`` was drawn already), embed,
    teacher-force, update f_hat and prepare the next scale's input."""
    var, quant = state.var, vae.quantize
    patch_nums = var.patch_nums
    S = len(patch_nums)
    B, pn = logits.shape[0], patch_nums[si]
    ratio = si / (S - 1)
    state.cur_L += pn * pn
    if idx_Bl is None:  # filters logits in place
        idx_Bl = sample_top_k_top_p_(logits, top_k=top_k, top_p=top_p, rng=rng, temperature=temperature)
    if not more_smooth:
        h = quant.embedding(idx_Bl)
    else:
        soft = gumbel_softmax(logits.mul(1 + ratio), tau=smooth_tau(ratio), rng=rng)
        h = soft @ quant.embedding.weight.unsqueeze(0)
    h = h.transpose_(1, 2).reshape(B, var.Cvae, pn, pn)
    if teacher_force is not None:
        idx_Bl, h = teacher_force(si, idx_Bl, h)
    state.tokens.append(idx_Bl)
    state.f_hat, next_map = quant.next_autoregressive_input(si, state.f_hat, h)
    if si != S - 1:
        next_map = next_map.view(B, var.Cvae, -1).transpose(1, 2)
        state.inputs.append(next_map)
        cur_L = state.cur_L
        next_map = var.word_embed(next_map) + state.lvl_pos[:, cur_L:cur_L + patch_nums[si + 1] ** 2]
        next_map = next_map.repeat(2, 1, 1)  # conditional and unconditional halves
    state.next_map = next_map


def run_scales(state: ScaleState, vae: VQVAE, scales: range, rng: Optional[torch.Generator], cfg: float,
               top_ks: Sequence[int], top_p: float, temperatures: Sequence[float], more_smooth: bool,
               on_scale: Optional[Callable[[int, int], None]] = None,
               teacher_force: Optional[TeacherForce] = None,
               on_f_hat: Optional[Callable[[int, torch.Tensor], None]] = None,
               guidance: Optional[Sequence[float]] = None) -> None:
    """The reference loop over ``scales`` (consecutive, continuing ``state``) on ``state.var``.
    ``guidance``: the guidance t of every scale (logits (1 + t) cond - t uncond) in place of upstream's
    ramp t = cfg * si / (S - 1); None is upstream's."""
    var = state.var
    S = len(var.patch_nums)
    for si in scales:
        logits = var.forward_scale(state.next_map, state.cond_BD, state.caches)
        B = logits.shape[0] // 2
        t = cfg * si / (S - 1) if guidance is None else guidance[si]
        logits = (1 + t) * logits[:B] - t * logits[B:]
        advance(state, vae, si, logits, rng, top_ks[si], top_p, temperatures[si], more_smooth, teacher_force)
        if on_f_hat is not None:
            on_f_hat(si, state.f_hat)
        if on_scale is not None:
            on_scale(si, S)


@torch.no_grad()
def autoregressive_infer_cfg(var: VAR, vae: VQVAE, label_B: torch.Tensor, rng: Optional[torch.Generator],
                             cfg: float = 1.5, top_k: Schedule = 0, top_p: float = 0.0,
                             more_smooth: bool = False, on_scale: Optional[Callable[[int, int], None]] = None,
                             teacher_force: Optional[TeacherForce] = None,
                             temperature: Schedule = 1.0,
                             on_f_hat: Optional[Callable[[int, torch.Tensor], None]] = None,
                             guidance: Optional[Schedule] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """label_B (B,) -> (f_hat (B, Cvae, H, W), per-scale tokens [(B, pn*pn)]).
    ``on_f_hat(si, f_hat)`` sees the accumulated f_hat after each scale (previews; read only).

    ``teacher_force(si, idx_Bl, h_BChw) -> (idx_Bl, h_BChw)`` may overwrite a scale's drawn tokens and
    their embedding before f_hat is updated (zero-shot editing, reference/edit.py). ``top_k`` and
    ``temperature`` are one value or one per scale (var_fast.schedules); with temperature 1 at every
    scale this is upstream's loop exactly. ``guidance`` (one value, or one per scale) replaces upstream's
    guidance ramp (scripts/probe_guidance_schedule.py; not a sampler option).
    """
    S = len(var.patch_nums)
    state = ScaleState(var, label_B)
    run_scales(state, vae, range(S), rng, cfg, per_scale("top_k", top_k, S), top_p,
               per_scale("temperature", temperature, S), more_smooth, on_scale, teacher_force, on_f_hat,
               None if guidance is None else per_scale("guidance", guidance, S))
    return state.f_hat, state.tokens
