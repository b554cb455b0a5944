"""Collaborative decoding (CoDe, czg1225/CoDe): a large drafter runs the first N scales, a small refiner
the rest, sharing one VQVAE. Pair checks, ``draft_steps`` checks and the pair's cost per image.

Approximate with respect to the drafter alone (the late scales come from another model); exact with
respect to CoDe's own code (reference backend, var_fast/reference/collaborative.py).
"""
from __future__ import annotations

import operator
from typing import Dict, Optional

from .checkpoint import CheckpointError
from .models import VARConfig

# the fine-tuned pairs of huggingface.co/Zigeng/VAR_CoDe (drafter_N.pth + refiner_N.pth)
CODE_DRAFT_STEPS = (6, 7, 8, 9)


def check_refiner(drafter: VARConfig, refiner: VARConfig, drafter_path: str = "<drafter>",
                  refiner_path: str = "<refiner>") -> None:
    """Refuse a drafter/refiner pair that cannot share one VQVAE and one token pyramid."""
    fields = (("vocab_size", "vocabulary size"), ("Cvae", "VQVAE code width (Cvae)"),
              ("num_classes", "class count"), ("patch_nums", "patch layout (and so image size)"))
    for field, what in fields:
        a, b = getattr(drafter, field), getattr(refiner, field)
        if (tuple(a) if field == "patch_nums" else a) != (tuple(b) if field == "patch_nums" else b):
            raise CheckpointError(f"refiner {refiner_path!r} cannot work with drafter {drafter_path!r}: "
                                  f"{what} differs ({field}={b} in the refiner, {a} in the drafter)")


def check_draft_steps(draft_steps, num_scales: int, default: Optional[int] = None) -> int:
    """``draft_steps`` N: the drafter runs scales 0..N-1, 1 <= N <= num_scales - 1 (None: ``default``)."""
    if draft_steps is None:
        if default is None:
            raise ValueError(f"draft_steps is required with a drafter/refiner pair: the number of scales the "
                             f"drafter runs, 1..{num_scales - 1} (CoDe: 8 for 1.7x at FID 1.98, 6 for 2.9x)")
        return default
    try:
        value = operator.index(draft_steps) if not isinstance(draft_steps, bool) else None
    except TypeError:
        value = None
    if value is None or not 1 <= value <= num_scales - 1:
        raise ValueError(f"draft_steps must be an integer in 1..{num_scales - 1} (scales the drafter runs of "
                         f"{num_scales}), got {draft_steps!r}")
    return value


def _tokens(cfg: VARConfig, scales: range) -> int:
    return sum(cfg.patch_nums[si] ** 2 for si in scales)


def transformer_flops(cfg: VARConfig, scales: range, prefix: int = 0) -> float:
    """FLOPs (multiply-add = 2) of one image's CFG-doubled transformer pass and head over ``scales``,
    with ``prefix`` tokens already in the KV cache before the first of them."""
    C, M, V = cfg.embed_dim, cfg.mlp_hidden, cfg.vocab_size
    kv, flops = prefix, 0.0
    for si in scales:
        l = cfg.patch_nums[si] ** 2
        kv += l
        flops += 2 * cfg.depth * (2 * l * C * (4 * C + 2 * M) + 4 * l * kv * C) + 2 * 2 * l * C * V
    return flops


def kv_cache_bytes(cfg: VARConfig, tokens: int, element_bytes: int) -> int:
    """Keys and values of ``tokens`` positions in every block, both CFG halves, per image."""
    return cfg.depth * 2 * 2 * tokens * cfg.embed_dim * element_bytes


def pair_cost(drafter: VARConfig, refiner: VARConfig, draft_steps: int, element_bytes: int = 2) -> Dict[str, float]:
    """Per image: FLOPs and KV-cache bytes of the pair (the refiner's prefill re-reads the drafted scales)
    against the drafter alone. The fast backend holds both models' caches: the drafter's up to the
    handoff, the refiner's over all scales."""
    S, N = len(drafter.patch_nums), draft_steps
    alone = transformer_flops(drafter, range(S))
    pair = transformer_flops(drafter, range(N)) + transformer_flops(refiner, range(S))
    kv_alone = kv_cache_bytes(drafter, drafter.L, element_bytes)
    kv_pair = kv_cache_bytes(drafter, _tokens(drafter, range(N)), element_bytes) + kv_cache_bytes(refiner, refiner.L,
                                                                                                 element_bytes)
    return dict(flops_pair=pair, flops_drafter=alone, kv_bytes_pair=kv_pair, kv_bytes_drafter=kv_alone)


def describe_cost(drafter: VARConfig, refiner: VARConfig, draft_steps: int, element_bytes: int = 2) -> str:
    c = pair_cost(drafter, refiner, draft_steps, element_bytes)
    return (f"CoDe pair d{drafter.depth}+d{refiner.depth}, N={draft_steps}: "
            f"{c['flops_pair'] / 1e9:.1f} GFLOPs per image vs {c['flops_drafter'] / 1e9:.1f} for the drafter alone "
            f"({c['flops_drafter'] / c['flops_pair']:.2f}x less); KV cache {c['kv_bytes_pair'] / 2**20:.1f} MiB "
            f"vs {c['kv_bytes_drafter'] / 2**20:.1f} MiB per image ({8 * element_bytes}-bit)")
