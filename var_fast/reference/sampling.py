"""Plain-PyTorch token sampling with the reference's semantics.

``sample_top_k_top_p_`` draws exactly as FoundationVision/VAR's ``sample_with_top_k_top_p_`` does
(same ops, same use of the generator), so a seeded run reproduces the reference tokens.
``filtered_probs`` gives the exact distribution after filtering (for tests of the fast ops).
``sample_top_k_top_p_philox`` is a float64 model of the native ``sample_top_k_top_p`` op (its keep
rule, its Philox4x32-10 uniform per row and its inverse-CDF draw), for tests of the native kernels.
"""
from __future__ import annotations

from typing import Optional, Tuple

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
                        rng: Optional[torch.Generator] = None, temperature: float = 1.0) -> torch.Tensor:
    """(B, l, V) logits -> (B, l) int64 tokens. Filters ``logits`` in place, like the reference.

    ``temperature`` divides the filtered logits before the softmax, as CoDe's sampler does (the top-p
    set is chosen at temperature 1)."""
    B, l, V = logits.shape
    top_k_top_p_filter_(logits, top_k, top_p)
    probs = (logits / temperature if temperature != 1 else logits).softmax(dim=-1).view(-1, V)
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


# ---- model of the native sampling ops (csrc/include/var_fast/sampling.cuh, philox.h) ----
_PHILOX_MUL = (0xD2511F53, 0xCD9E8D57)
_PHILOX_WEYL = (0x9E3779B9, 0xBB67AE85)
_MASK32 = 0xFFFFFFFF


def _mulhilo32(a: int, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of a * b for uint32 values held in int64 (no 64-bit overflow)."""
    low_part = a * (b & 0xFFFF)  # < 2^48
    high_part = a * (b >> 16)  # < 2^48
    low = (low_part + ((high_part & 0xFFFF) << 16)) & _MASK32
    high = (high_part + (low_part >> 16)) >> 16
    return high, low


def philox4x32_10(counter: torch.Tensor, key: Tuple[int, int]) -> torch.Tensor:
    """Philox4x32-10 of counters (..., 4) (uint32 values in int64) under key (k0, k1) -> (..., 4)."""
    c0, c1, c2, c3 = counter.to(torch.int64).unbind(-1)
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for _ in range(10):
        hi0, lo0 = _mulhilo32(_PHILOX_MUL[0], c0)
        hi1, lo1 = _mulhilo32(_PHILOX_MUL[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _PHILOX_WEYL[0]) & _MASK32, (k1 + _PHILOX_WEYL[1]) & _MASK32
    return torch.stack((c0, c1, c2, c3), dim=-1)


def philox_uniform(seed: int, rows: torch.Tensor) -> torch.Tensor:
    """The native ops' uniform of each row (float64, exact): key = seed's (lo32, hi32), counter =
    (row lo32, row hi32, 0, 0), the 24 high bits of the first word times 2^-24."""
    seed &= (1 << 64) - 1
    rows = rows.to(torch.int64)
    zeros = torch.zeros_like(rows)
    counter = torch.stack((rows & _MASK32, rows >> 32, zeros, zeros), dim=-1)
    word = philox4x32_10(counter, (seed & _MASK32, seed >> 32))[..., 0]
    return (word >> 8).double() * 2.0 ** -24


def top_k_top_p_keep_mask(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """The native ops' keep rule in float64 (bool mask, same shape as ``logits``).

    top-k (0 < k < V) keeps x >= the k-th largest value; top-p (0 < p < 1) then keeps token i iff the
    probability (among the top-k survivors) of the tokens whose logit is strictly larger than x_i is
    < p. Unlike upstream's sort (which keeps an arbitrary part of a tied group), tied tokens are
    always kept or dropped together.
    """
    x = logits.double()
    V = x.shape[-1]
    keep = torch.ones_like(x, dtype=torch.bool)
    if 0 < top_k < V:
        keep &= x >= x.topk(top_k, dim=-1).values[..., -1:]
    if 0 < top_p < 1:
        w = torch.where(keep, (x - x.amax(dim=-1, keepdim=True)).exp(), torch.zeros_like(x))
        descending, order = x.sort(dim=-1, descending=True)
        cumulative = w.gather(-1, order).cumsum(dim=-1)
        n_greater = V - torch.searchsorted(descending.flip(-1).contiguous(), x.contiguous(), right=True)
        mass_greater = torch.where(n_greater > 0, cumulative.gather(-1, (n_greater - 1).clamp(min=0)),
                                   torch.zeros_like(x))
        keep &= mass_greater < top_p * cumulative[..., -1:]
    return keep


def sample_top_k_top_p_philox(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0, seed: int = 0,
                              row_offset: int = 0) -> torch.Tensor:
    """(B, L, V) logits -> (B, L) tokens as the native ``sample_top_k_top_p`` draws them, in float64.

    Row r = b * L + l draws u = ``philox_uniform(seed, row_offset + r)`` and takes the first index
    whose cumulative kept probability exceeds u. The native op computes in float32, so a token can
    differ where that decision is within rounding (a cumulative sum, or a token's top-p mass, within
    ~1e-6 relative of its threshold).
    """
    B, L, V = logits.shape
    x = logits.double().reshape(B * L, V)
    keep = top_k_top_p_keep_mask(x, top_k, top_p)
    w = torch.where(keep, (x - x.amax(dim=-1, keepdim=True)).exp(), torch.zeros_like(x))
    cdf = w.cumsum(dim=-1)
    u = philox_uniform(seed, row_offset + torch.arange(B * L, device=x.device))
    threshold = (u * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, threshold, right=True).clamp(max=V - 1).view(B, L)
