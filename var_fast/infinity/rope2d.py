"""2-D rotary position embedding of Infinity's self-attention (upstream basic.py:
precompute_rope2d_freqs_grid / apply_rotary_emb), computed for one scale schedule at a time."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

MAX_EDGE = 2048 // 16  # the frequency grid covers 128 x 128 positions
BASE = 10000.0


def freqs_grid(head_dim: int) -> torch.Tensor:
    """(2, 128, 128, head_dim // 2): cos and sin of y*theta (first half) and x*theta (second half)."""
    half = head_dim // 2
    inv_freq = 1.0 / (BASE ** (torch.arange(0, half, 2, dtype=torch.int64).float() / half))
    t = torch.arange(MAX_EDGE, dtype=torch.int64).type_as(inv_freq)
    f_h = torch.outer(t / 1.0, inv_freq)
    f_w = torch.outer(t / 1.0, inv_freq)
    grid = torch.concat([f_h[:, None, :].expand(-1, MAX_EDGE, -1), f_w[None, :, :].expand(MAX_EDGE, -1, -1)], dim=-1)
    return torch.stack([torch.cos(grid), torch.sin(grid)], dim=0)


def rope_cache(head_dim: int, schedule: Sequence[Tuple[int, int, int]], full_hw: Tuple[int, int],
               normalized_by_hw: int = 2) -> torch.Tensor:
    """(2, sum(h*w), head_dim // 2) for every token of ``schedule``; ``full_hw`` is the last (h, w) of the
    1M schedule of the aspect-ratio template the schedule belongs to (upstream keys its caches by template)."""
    grid = freqs_grid(head_dim)
    uph_full, upw_full = full_hw
    if uph_full >= upw_full:
        uph, upw = MAX_EDGE, int(MAX_EDGE / uph_full * upw_full)
    else:
        uph, upw = int(MAX_EDGE / upw_full * uph_full), MAX_EDGE
    parts = []
    for (_, ph, pw) in schedule:
        if normalized_by_hw == 1:  # bilinear downsampling of the grid cut to the aspect ratio
            c = F.interpolate(grid[:, :uph, :upw, :].permute([0, 3, 1, 2]), size=(ph, pw), mode="bilinear",
                              align_corners=True).permute([0, 2, 3, 1])
        elif normalized_by_hw == 2:  # positions spread over the full-resolution grid
            idx = torch.stack([
                (torch.arange(ph) * (uph_full / ph)).reshape(ph, 1).expand(ph, pw),
                (torch.arange(pw) * (upw_full / pw)).reshape(1, pw).expand(ph, pw),
            ], dim=-1).round().int().reshape(-1, 2)
            c = grid[:, idx[:, 0], idx[:, 1], :].reshape(2, ph, pw, -1)
        elif normalized_by_hw == 0:
            c = grid[:, :ph, :pw, :]
        else:
            raise ValueError(f"unknown rope2d_normalized_by_hw: {normalized_by_hw}")
        parts.append(c.reshape(2, ph * pw, -1))
    return torch.cat(parts, 1)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cache: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """q, k: (B, H, L, c); cache: (2, L, c // 2) for these L tokens. Pairs (2i, 2i+1) rotate together."""
    cos, sin = cache[0], cache[1]
    qk = torch.stack((q, k), dim=0)
    device_type = qk.device.type if qk.device.type != "mps" else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):  # as upstream: never under autocast
        qk = qk.reshape(*qk.shape[:-1], -1, 2)
        qk = torch.stack([cos * qk[..., 0] - sin * qk[..., 1], sin * qk[..., 0] + cos * qk[..., 1]], dim=-1)
        qk = qk.reshape(*qk.shape[:-2], -1)
        q, k = qk.unbind(dim=0)
    return q, k
