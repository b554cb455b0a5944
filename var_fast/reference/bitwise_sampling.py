"""Plain-PyTorch bitwise sampling with upstream Infinity's semantics (the reference of ops.sample_bits).

Upstream (Infinity 4c27bbb, ``autoregressive_infer_cfg``; var_fast/infinity/reference_sampler.py) scales the
logits by ``1 / tau``, mixes the CFG halves as ``cfg * cond + (1 - cfg) * uncond``, reshapes them into pairs
(logit of bit 0, logit of bit 1) and samples each pair with ``sample_with_top_k_top_p_also_inplace_modifying_logits_``.

* ``bit_logits`` / ``filter_bits_`` / ``sample_bits_``: those formulas (float32), drawing with a torch
  generator as upstream does.
* ``filtered_bit_probs``: the probability of bit 1 after upstream's filter (float64), for distribution tests.
* ``sample_bits_philox``: a float64 model of the native ops' draw (their Philox4x32-10 counter layout and
  inverse-CDF rule, csrc/include/var_fast/bitwise_sampling.cuh), for tests of the native kernels.

Inputs of any floating dtype are computed in float32 (``logits.float()`` first), as the ops do.
"""
from __future__ import annotations

from typing import Optional

import torch

from .sampling import philox4x32_10, top_k_top_p_filter_

_MASK32 = 0xFFFFFFFF
BITS_PER_GROUP = 4  # one Philox call gives the uniforms of 4 consecutive bits


def bit_logits(logits: torch.Tensor, tau: float, cfg: Optional[float] = None) -> torch.Tensor:
    """logits (N, L, 2D) -> pairs (B, L, D, 2) float32: ``x.mul(1 / tau)``, then with ``cfg`` the mix
    ``cfg * x[:B] + (1 - cfg) * x[B:]`` of the conditional and unconditional halves (N = 2B)."""
    x = logits.float().mul(1 / tau)
    if cfg is not None:
        B = x.shape[0] // 2
        x = cfg * x[:B] + (1 - cfg) * x[B:]
    return x.reshape(x.shape[0], x.shape[1], -1, 2)


def filter_bits_(pairs: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Upstream's top-k / top-p filter on each pair (last dim 2), in place: filtered logits become -inf.
    top_k 1 keeps the logits equal to the max; top_p drops the smaller logit (bit 0 on a tie: torch's CPU
    sort puts it first) when its softmax probability is <= 1 - top_p."""
    return top_k_top_p_filter_(pairs, top_k, top_p)


def sample_bits_(logits: torch.Tensor, tau: float, cfg: Optional[float] = None, top_k: int = 0,
                 top_p: float = 0.0, rng: Optional[torch.Generator] = None) -> torch.Tensor:
    """logits (N, L, 2D) -> bits (B, L, D) int64, drawn as upstream draws them (multinomial over the
    softmax of each filtered pair, with ``rng``)."""
    pairs = filter_bits_(bit_logits(logits, tau, cfg), top_k, top_p)
    B, L, D, _ = pairs.shape
    probs = pairs.softmax(dim=-1).view(-1, 2)
    return torch.multinomial(probs, num_samples=1, replacement=True, generator=rng).view(B, L, D)


def filtered_bit_probs(logits: torch.Tensor, tau: float, cfg: Optional[float] = None, top_k: int = 0,
                       top_p: float = 0.0) -> torch.Tensor:
    """(B, L, D) float64: the probability of bit 1 after upstream's filter (decided in float32, as upstream)."""
    return filtered_pair_probs(logits, tau, cfg, top_k, top_p)[..., 1]


def filtered_pair_probs(logits: torch.Tensor, tau: float, cfg: Optional[float] = None, top_k: int = 0,
                        top_p: float = 0.0) -> torch.Tensor:
    """(B, L, D, 2) float64: the probabilities of bit 0 and bit 1 after upstream's filter."""
    return filter_bits_(bit_logits(logits, tau, cfg), top_k, top_p).double().softmax(dim=-1)


def philox_bit_uniforms(seed: int, image_offset: int, B: int, L: int, D: int) -> torch.Tensor:
    """The native ops' uniform of each bit (B, L, D), float64 and exact: key = seed's (lo32, hi32), counter =
    (image lo32, image hi32, l, d // 4) with image = image_offset + b, word d % 4, its 24 high bits * 2^-24."""
    seed &= (1 << 64) - 1
    groups = -(-D // BITS_PER_GROUP)
    image = image_offset + torch.arange(B, dtype=torch.int64).view(B, 1, 1)
    l = torch.arange(L, dtype=torch.int64).view(1, L, 1)
    j = torch.arange(groups, dtype=torch.int64).view(1, 1, groups)
    image, l, j = torch.broadcast_tensors(image, l, j)
    counter = torch.stack((image & _MASK32, image >> 32, l, j), dim=-1)
    words = philox4x32_10(counter, (seed & _MASK32, seed >> 32)).reshape(B, L, groups * BITS_PER_GROUP)[..., :D]
    return (words >> 8).double() * 2.0 ** -24


def sample_bits_philox(logits: torch.Tensor, tau: float, cfg: Optional[float] = None, top_k: int = 0,
                       top_p: float = 0.0, seed: int = 0, image_offset: int = 0) -> torch.Tensor:
    """logits (N, L, 2D) -> bits (B, L, D) as the native ops draw them, in float64: bit 1 iff the bit's
    uniform u >= P(bit 0) (from upstream's filtered probabilities). The ops compute in float32, so a bit can
    differ where u is within rounding (~1e-6) of P(bit 0), or where the pair's top-p cut is."""
    p0 = filtered_pair_probs(logits, tau, cfg, top_k, top_p)[..., 0]
    B, L, D = p0.shape
    u = philox_bit_uniforms(seed, image_offset, B, L, D).to(p0.device)
    return (u >= p0).to(torch.int64)
