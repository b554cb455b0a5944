"""Plain-PyTorch token sampling with the reference's semantics.

``sample_top_k_top_p_`` draws exactly as FoundationVision/VAR's ``sample_with_top_k_top_p_`` does
(same ops, same use of the generator), so a seeded run reproduces the reference tokens.
``filtered_probs`` gives the exact distribution after filtering (for tests of the fast ops).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def top_k_top_p_filter_(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Set filtered-out logits to -inf in place; returns ``logits``.

    top-k keeps every logit >= the k-th largest (ties kept); top-p removes the smallest tokens
    whose cumulative probability is <= 1 - top_p, never the most likely one.
    """
    V = logits.shape[-1]
    if 0 < top_k < V:
        kth = logits.topk(top_k, largest=True, sorted=False, dim=-1)[0].amin(dim=-1, keepdim=True)
        logits.masked_fill_(logits < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False
        logits.masked_fill_(remove.scatter(sorted_idx.ndim - 1, sorted_idx, remove), -torch.inf)
    return logits


def sample_top_k_top_p_(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                        rng: Optional[torch.Generator] = None) -> torch.Tensor:
    """(B, l, V) logits -> (B, l) int64 tokens. Filters ``logits`` in place, like the reference."""
    B, l, V = logits.shape
    top_k_top_p_filter_(logits, top_k, top_p)
    probs = logits.softmax(dim=-1).view(-1, V)
    return torch.multinomial(probs, num_samples=1, replacement=True, generator=rng).view(B, l)


def filtered_probs(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Exact float64 probabilities after filtering (float64 so that tests compare distributions)."""
    return top_k_top_p_filter_(logits.double().clone(), top_k, top_p).softmax(dim=-1)


def cfg_mix(logits_2BlV: torch.Tensor, guidance: float) -> torch.Tensor:
    """(1 + t) * cond - t * uncond over the two halves of a CFG-doubled batch."""
    B = logits_2BlV.shape[0] // 2
    return (1 + guidance) * logits_2BlV[:B] - guidance * logits_2BlV[B:]


def gumbel_softmax(logits: torch.Tensor, tau: float, rng: Optional[torch.Generator]) -> torch.Tensor:
    """Soft Gumbel-softmax drawing the noise from ``rng`` as the reference does."""
    if rng is None:
        return F.gumbel_softmax(logits=logits, tau=tau, hard=False, eps=1e-10, dim=-1)
    gumbels = -torch.empty_like(logits, memory_format=torch.legacy_contiguous_format).exponential_(generator=rng).log()
    return ((logits + gumbels) / tau).softmax(-1)
