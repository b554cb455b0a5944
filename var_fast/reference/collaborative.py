"""Collaborative decoding (CoDe) in plain PyTorch: the semantics of czg1225/CoDe's
``autoregressive_infer_cfg_draft`` followed by ``autoregressive_infer_cfg_refine`` (models/var.py).

The drafter runs the first ``draft_steps`` (N) scales of the reference loop. The refiner then
re-seeds the generator, prefills its KV caches with the drafted scales' inputs and the entry scale's
in one block-causal pass, applies CFG to the entry scale's logits only, and, as CoDe's code does,
draws once from the conditional logits of every prefilled scale before the entry scale (draws that
are discarded but advance the random stream), then the entry scale, then runs the remaining scales.
Same ops in the same order: in float32 this reproduces CoDe's tokens.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ..models.var import VAR
from ..models.vqvae import VQVAE
from .autoregressive import ScaleState, TeacherForce, advance, random_labels, run_scales
from .sampling import sample_top_k_top_p_


def _generator(seed: Optional[int], device) -> Optional[torch.Generator]:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def refiner_prefill(refiner: VAR, state: ScaleState, drafted_inputs: Sequence[torch.Tensor],
                    draft_steps: int) -> torch.Tensor:
    """The refiner's one block-causal pass over scales 0..N (N = draft_steps) -> logits (2B, L_N, V);
    its KV caches in ``state`` then hold those scales."""
    pindex = sum(pn * pn for pn in refiner.patch_nums[:draft_steps + 1])
    first_l = refiner.first_l
    x = refiner.word_embed(torch.cat(list(drafted_inputs[:draft_steps]), dim=1)) + state.lvl_pos[:, first_l:pindex]
    x = torch.cat([state.first_map, x.repeat(2, 1, 1)], dim=1)
    mask = refiner.attn_bias_for_masking[:, :, :pindex, :pindex]
    return refiner.forward_scale(x, state.cond_BD, state.caches, attn_mask=mask)


@torch.no_grad()
def collaborative_infer_cfg(drafter: VAR, refiner: VAR, vae: VQVAE, label_B: Optional[torch.Tensor], B: int,
                            seed: Optional[int], draft_steps: int, cfg: float, top_ks: Sequence[int], top_p: float,
                            temperatures: Sequence[float], more_smooth: bool = False,
                            on_scale: Optional[Callable[[int, int], None]] = None,
                            teacher_force: Optional[TeacherForce] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """(f_hat, per-scale tokens): the drafter's tokens for scales < draft_steps, the refiner's after.

    ``label_B`` None draws B random classes from the seeded stream (both models draw them, as CoDe's
    two functions each do). ``top_ks`` / ``temperatures`` hold one value per scale.
    """
    patch_nums = drafter.patch_nums
    S, N = len(patch_nums), draft_steps
    device = drafter.pos_start.device
    rng = _generator(seed, device)
    labels = label_B if label_B is not None else random_labels(drafter.num_classes, B, device, rng)
    draft = ScaleState(drafter, labels)
    run_scales(draft, vae, range(N), rng, cfg, top_ks, top_p, temperatures, more_smooth, on_scale, teacher_force)

    rng = _generator(seed, device)  # CoDe's refiner re-seeds the generator
    if label_B is None:
        labels = random_labels(refiner.num_classes, B, device, rng)
    refine = ScaleState(refiner, labels, f_hat=draft.f_hat)
    logits = refiner_prefill(refiner, refine, draft.inputs, N)
    end = sum(pn * pn for pn in patch_nums[:N + 1])
    begin = end - patch_nums[N] ** 2
    t = cfg * N / (S - 1)
    Bc = labels.shape[0]
    logits[:Bc, begin:end] = (1 + t) * logits[:Bc, begin:end] - t * logits[Bc:, begin:end]
    start = 0
    for a in range(N + 1):  # CoDe draws at every prefilled scale; only the entry scale's draw is kept
        l = patch_nums[a] ** 2
        idx_Bl = sample_top_k_top_p_(logits[:Bc, start:start + l], top_k=top_ks[a], top_p=top_p, rng=rng,
                                     temperature=temperatures[a])
        start += l
    refine.cur_L = begin
    refine.tokens = list(draft.tokens)
    advance(refine, vae, N, logits[:Bc, begin:end], rng, top_ks[N], top_p, temperatures[N], more_smooth,
            teacher_force, idx_Bl=idx_Bl)
    if on_scale is not None:
        on_scale(N, S)
    run_scales(refine, vae, range(N + 1, S), rng, cfg, top_ks, top_p, temperatures, more_smooth, on_scale,
               teacher_force)
    return refine.f_hat, refine.tokens
