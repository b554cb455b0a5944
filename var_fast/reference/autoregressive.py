"""The reference sampling loop: the semantics of upstream ``VAR.autoregressive_infer_cfg``.

Same ops in the same order, the same use of the random generator, the growing KV cache by
concatenation: in float32 this reproduces the reference code token for token and pixel for pixel.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

from ..models.blocks import KVCache
from ..models.var import VAR
from ..models.vqvae import VQVAE
from .sampling import gumbel_softmax, sample_top_k_top_p_

TeacherForce = Callable[[int, torch.Tensor, Optional[torch.Tensor]], Tuple[torch.Tensor, Optional[torch.Tensor]]]


def random_labels(num_classes: int, B: int, device, rng: Optional[torch.Generator]) -> torch.Tensor:
    """Uniform random classes, drawn from ``rng`` as the reference does."""
    uniform = torch.full((1, num_classes), fill_value=1.0 / num_classes, dtype=torch.float32, device=device)
    return torch.multinomial(uniform, num_samples=B, replacement=True, generator=rng).reshape(B)


def smooth_tau(ratio: float) -> float:
    """Gumbel temperature of ``more_smooth`` at progress ``ratio`` (MaskGIT's schedule, as upstream)."""
    return max(0.27 * (1 - ratio * 0.95), 0.005)


@torch.no_grad()
def autoregressive_infer_cfg(var: VAR, vae: VQVAE, label_B: torch.Tensor, rng: Optional[torch.Generator],
                             cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
                             more_smooth: bool = False, on_scale: Optional[Callable[[int, int], None]] = None,
                             teacher_force: Optional[TeacherForce] = None,
                             on_f_hat: Optional[Callable[[int, torch.Tensor], None]] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """label_B (B,) -> (f_hat (B, Cvae, H, W), per-scale tokens [(B, pn*pn)]).
    ``on_f_hat(si, f_hat)`` sees the accumulated f_hat after each scale (previews; read only).

    ``teacher_force(si, idx_Bl, h_BChw) -> (idx_Bl, h_BChw)`` may overwrite a scale's drawn tokens and
    their embedding before f_hat is updated (zero-shot editing, reference/edit.py).
    """
    B = label_B.shape[0]
    patch_nums = var.patch_nums
    S = len(patch_nums)
    quant = vae.quantize
    sos = cond_BD = var.class_emb(torch.cat((label_B, torch.full_like(label_B, fill_value=var.num_classes)), dim=0))
    lvl_pos = var.level_pos()
    first_l = var.first_l
    next_map = (sos.unsqueeze(1).expand(2 * B, first_l, -1) + var.pos_start.expand(2 * B, first_l, -1)
                + lvl_pos[:, :first_l])
    f_hat = sos.new_zeros(B, var.Cvae, patch_nums[-1], patch_nums[-1])
    caches = [KVCache() for _ in var.blocks]
    tokens: List[torch.Tensor] = []
    cur_L = 0
    for si, pn in enumerate(patch_nums):
        ratio = si / (S - 1)
        cur_L += pn * pn
        logits = var.forward_scale(next_map, cond_BD, caches)
        t = cfg * ratio
        logits = (1 + t) * logits[:B] - t * logits[B:]
        idx_Bl = sample_top_k_top_p_(logits, top_k=top_k, top_p=top_p, rng=rng)  # filters logits in place
        if not more_smooth:
            h = quant.embedding(idx_Bl)
        else:
            soft = gumbel_softmax(logits.mul(1 + ratio), tau=smooth_tau(ratio), rng=rng)
            h = soft @ quant.embedding.weight.unsqueeze(0)
        h = h.transpose_(1, 2).reshape(B, var.Cvae, pn, pn)
        if teacher_force is not None:
            idx_Bl, h = teacher_force(si, idx_Bl, h)
        tokens.append(idx_Bl)
        f_hat, next_map = quant.next_autoregressive_input(si, f_hat, h)
        if on_f_hat is not None:
            on_f_hat(si, f_hat)
        if on_scale is not None:
            on_scale(si, S)
        if si != S - 1:
            next_map = next_map.view(B, var.Cvae, -1).transpose(1, 2)
            next_map = var.word_embed(next_map) + lvl_pos[:, cur_L:cur_L + patch_nums[si + 1] ** 2]
            next_map = next_map.repeat(2, 1, 1)  # conditional and unconditional halves
    return f_hat, tokens
