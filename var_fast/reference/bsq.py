"""Plain-PyTorch reference of ``ops.bsq_scale_update``: the per-scale formulas of Infinity's reference loop
(var_fast/infinity/reference_sampler.py, upstream autoregressive_infer_cfg at 4c27bbb) after the bits of a
scale are drawn: BSQ.bits_to_codes, BSQVAE.codes_to_grid (trilinear, t = 1) up to the summed codes' grid and
from the summed codes to the next scale's VAE grid, pixel_shuffle / pixel_unshuffle(2) with patchify.

The summed codes are interpolated in channels-last layout, as they are in the reference loop (its sum is
the channels-last output of the first interpolation): torch's CPU kernel, hence its rounding, depends on it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def bits_to_codes(bits: torch.Tensor, patchify: bool) -> torch.Tensor:
    """bits (B, h, w, D) int64 -> codes (B, d, 1, h', w') (channels-last view), as the reference loop:
    pixel_shuffle(2) with patchify, then BSQ.bits_to_codes (s = 1/np.sqrt(d), a float64 scalar)."""
    idx = bits
    if patchify:  # (B, h, w, 4d) -> (B, 2h, 2w, d)
        idx = F.pixel_shuffle(idx.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    idx = idx.unsqueeze(1)
    s = 1 / np.sqrt(idx.shape[-1])
    codes = F.normalize(idx * s * 2 - s, dim=-1)
    return codes.movedim(-1, 1)


def bsq_scale_update(bits: torch.Tensor, summed_codes: torch.Tensor, next_h: int, next_w: int,
                     patchify: bool) -> torch.Tensor:
    """summed_codes (B, d, H, W) float32 += the codes of ``bits`` on its grid (in place); returns the next
    scale's transformer input (B, L, d or 4d), or an empty tensor when next_h == 0 (last scale)."""
    B, d, H, W = summed_codes.shape
    codes = bits_to_codes(bits, patchify)
    if tuple(codes.shape[-2:]) != (H, W):
        codes = F.interpolate(codes, size=(1, H, W), mode="trilinear")
    # the last scale of the reference adds its codes without interpolation (same grid: same values)
    summed_codes.add_(codes.squeeze(2))
    if next_h == 0:
        return summed_codes.new_empty((0,))
    summed = summed_codes.unsqueeze(2).contiguous(memory_format=torch.channels_last_3d)
    nxt = F.interpolate(summed, size=(1, next_h, next_w), mode="trilinear").squeeze(-3)
    if patchify:
        nxt = F.pixel_unshuffle(nxt, 2)
    return nxt.reshape(*nxt.shape[:2], -1).permute(0, 2, 1)
