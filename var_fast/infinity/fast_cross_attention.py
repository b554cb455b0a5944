"""Cross-attention of Infinity's fast loop: the text keys/values projected and rounded once per batch,
then per scale the attention of the image queries to them, with the numerics of ``blocks.varlen_attention``
(upstream's float32 call into flash_attn_varlen: q, k, v rounded to bfloat16, attention in float32,
output rounded to bfloat16).

The reference (``CrossAttention.forward``) projects and rounds the text keys/values at every scale and
block and walks the packed prompts one by one. Here ``TextKV.project`` does the projection and the bf16
rounding of k, v once per batch (they do not change across scales) into a padded (B, H, Lmax, c)
layout, and ``attend`` runs one of two variants per scale:

* ``"loop"``: one SDPA per prompt on its first ``lens[b]`` keys: the same calls on the same values as
  varlen_attention, so bit for bit its result (tests/test_infinity_cross_attention.py).
* ``"padded"``: one SDPA over the whole padded batch with a key mask. Padding keys get zero weight, but the
  kernel sums over more keys in other blocks, so the float32 result differs in the last bits and, after
  the bf16 rounding, about 1 element in 10^4 is one bf16 ulp off (measured; the tests bound it).

``choose_variant`` picks one per device (benchmarks/bench_infinity_cross_attention.py, RESULTS.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

VARIANTS = ("loop", "padded")


def round_bf16(t: torch.Tensor) -> torch.Tensor:
    """Float32 holding t rounded to bfloat16 (varlen_attention's rounding of its inputs and output)."""
    return t.to(torch.bfloat16).float()


@dataclass(frozen=True)
class TextKV:
    """One block's text keys and values for a batch of prompts, rounded to bf16 (held in float32).

    k, v: (B, H, Lmax, c), prompt b's keys at [b, :, :lens[b]], zeros after them (finite: the padded
    variant multiplies them by zero weights); key_mask: (B, 1, 1, Lmax) bool, True on real keys.
    """
    k: torch.Tensor
    v: torch.Tensor
    key_mask: torch.Tensor
    lens: Tuple[int, ...]

    @classmethod
    def from_compact(cls, k: torch.Tensor, v: torch.Tensor, lens: Sequence[int]) -> "TextKV":
        """k, v: (sum(lens), H, c) as CrossAttention.project_kv returns them (packed prompts)."""
        lens = tuple(int(n) for n in lens)
        if k.ndim != 3 or v.shape != k.shape:
            raise ValueError(f"TextKV: k and v must both be (sum(lens), H, c), got {tuple(k.shape)} and {tuple(v.shape)}")
        if not lens or min(lens) < 1 or sum(lens) != k.shape[0]:
            raise ValueError(f"TextKV: lens must be >= 1 each and sum to k's {k.shape[0]} rows, got {list(lens)}")
        B, Lmax = len(lens), max(lens)
        _, H, c = k.shape
        kp = k.new_zeros((B, H, Lmax, c), dtype=torch.float32)
        vp = torch.zeros_like(kp)
        start = 0
        for b, n in enumerate(lens):
            kp[b, :, :n] = round_bf16(k[start:start + n]).transpose(0, 1)
            vp[b, :, :n] = round_bf16(v[start:start + n]).transpose(0, 1)
            start += n
        positions = torch.arange(Lmax, device=k.device)
        key_mask = (positions[None, :] < torch.tensor(lens, device=k.device)[:, None]).view(B, 1, 1, Lmax)
        return cls(kp, vp, key_mask, lens)

    @classmethod
    def project(cls, ca, text: torch.Tensor, lens: Sequence[int]) -> "TextKV":
        """The keys/values of cross-attention module ``ca`` (blocks.CrossAttention) of the packed text
        features (sum(lens), C_text): once per batch instead of once per scale."""
        return cls.from_compact(*ca.project_kv(text), lens)

    @property
    def batch_size(self) -> int:
        return len(self.lens)


def attend_loop(q: torch.Tensor, kv: TextKV, scale: float) -> torch.Tensor:
    """One SDPA per prompt. q: (B, L, H*c) projected queries -> (B, L, H*c) float32 (bf16 values)."""
    B, L, C = _check(q, kv)
    H, c = kv.k.shape[1], kv.k.shape[3]
    qh = round_bf16(q).view(B, L, H, c).transpose(1, 2)
    out = [F.scaled_dot_product_attention(qh[b:b + 1], kv.k[b:b + 1, :, :n], kv.v[b:b + 1, :, :n], scale=scale)
           for b, n in enumerate(kv.lens)]
    return round_bf16(torch.cat(out, 0).transpose(1, 2).reshape(B, L, C))


def attend_padded(q: torch.Tensor, kv: TextKV, scale: float) -> torch.Tensor:
    """One SDPA over the padded batch with the key mask. q: (B, L, H*c) -> (B, L, H*c) float32 (bf16 values)."""
    B, L, C = _check(q, kv)
    H, c = kv.k.shape[1], kv.k.shape[3]
    qh = round_bf16(q).view(B, L, H, c).transpose(1, 2)
    out = F.scaled_dot_product_attention(qh, kv.k, kv.v, attn_mask=kv.key_mask, scale=scale)
    return round_bf16(out.transpose(1, 2).reshape(B, L, C))


def attend(q: torch.Tensor, kv: TextKV, scale: float, variant: str) -> torch.Tensor:
    """The attention of q (B, L, H*c) to the text, as varlen_attention(q, k, v, [L] * B, lens, scale)
    reshaped to (B, L, H*c), by ``variant`` ("loop" or "padded")."""
    if variant == "loop":
        return attend_loop(q, kv, scale)
    if variant == "padded":
        return attend_padded(q, kv, scale)
    raise ValueError(f"unknown cross-attention variant {variant!r}; expected one of {VARIANTS}")


def cross_attention(ca, x: torch.Tensor, kv: TextKV, variant: str) -> torch.Tensor:
    """blocks.CrossAttention.forward(x, ..) of an image-token module ``ca`` with the keys/values of ``kv``:
    mat_q, the attention, proj. x: (B, L, C) (the ca_norm output) -> (B, L, C)."""
    return ca.proj(attend(ca.mat_q(x), kv, ca.scale, variant))


def choose_variant(device: torch.device) -> str:
    """The variant the fast loop uses on ``device``.

    CPU: "loop", measured faster than "padded" at Infinity-2B-like shapes (benchmarks/RESULTS.md,
    bench_infinity_cross_attention.py) and bit for bit varlen_attention. CUDA: "loop" as well until
    measured on a GPU: it makes the reference's own SDPA calls (so it is exact there too); "padded" is one
    launch instead of B per block and scale, which may win under CUDA graphs at small scales, at the cost
    of bf16-ulp differences (the GPU check in benchmarks/gpu_check decides).
    """
    return "loop"


def _check(q: torch.Tensor, kv: TextKV) -> Tuple[int, int, int]:
    if q.ndim != 3:
        raise ValueError(f"cross-attention queries must be (B, L, H*c), got {tuple(q.shape)}")
    B, L, C = q.shape
    _, H, _, c = kv.k.shape
    if B != kv.batch_size or C != H * c:
        raise ValueError(f"cross-attention queries {tuple(q.shape)} do not match the text keys: "
                         f"{kv.batch_size} prompts, {H} heads of {c}")
    return B, L, C
