"""Multi-scale binary spherical quantizer of Infinity's VAE (upstream infinity/models/bsq_vae/multiscale_bsq.py:
MultiScaleBSQ with the BSQ ``lfq`` inside, as vae_model builds it: no projections, no layer norm,
new_quant=True). Its only state is the bit-weight buffer ``lfq.mask``."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

INTERPOLATE_UP = "trilinear"   # MultiScaleBSQ.z_interplote_up: codes of a scale -> larger grids
INTERPOLATE_DOWN = "area"      # MultiScaleBSQ.z_interplote_down: residual -> a scale's grid


class BSQ(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.codebook_dim = dim
        self.codebook_scale = 1 / np.sqrt(dim)  # a numpy float64, as upstream
        self.register_buffer("mask", 2 ** torch.arange(dim - 1, -1, -1))

    def bits_to_codes(self, bits: torch.Tensor) -> torch.Tensor:
        """bits (..., h, w, d) in {0, 1} -> codes on the unit sphere, channels first: (B, d, ...)."""
        codes = bits * self.codebook_scale * 2 - self.codebook_scale
        codes = F.normalize(codes, dim=-1)
        return codes.movedim(-1, 1)

    def quantize(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """z (B, d, t, h, w) -> (quantized codes (B, d, t, h, w), bits (B, t, h, w, d) int32)."""
        x = F.normalize(z.movedim(1, -1).contiguous(), dim=-1)  # contiguous as upstream (pack) normalises it
        zhat = torch.where(x > 0, torch.tensor(1, dtype=x.dtype), torch.tensor(-1, dtype=x.dtype))
        q = (1.0 / (self.codebook_dim ** 0.5)) * zhat
        q = x + (q - x)  # upstream's straight-through form, same float operations
        bits = (q > 0).int()
        return q.movedim(-1, 1), bits


class MultiScaleBSQ(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.lfq = BSQ(dim)
        self.z_interplote_up, self.z_interplote_down = INTERPOLATE_UP, INTERPOLATE_DOWN

    def forward(self, z: torch.Tensor, schedule: Sequence[Tuple[int, int, int]]):
        """Encoder features (B, d, H, W) -> (summed codes (B, d, H, W), bits per scale [(B, 1, h, w, d)])."""
        if z.ndim == 4:
            z = z.unsqueeze(2)
        T, H, W = z.shape[2:]
        quantized_out = 0.
        residual = z
        bits: List[torch.Tensor] = []
        for (pt, ph, pw) in schedule:
            if (pt, ph, pw) != (T, H, W):
                r = F.interpolate(residual, size=(pt, ph, pw), mode=INTERPOLATE_DOWN)
            else:
                r = residual
            q, b = self.lfq.quantize(r)
            if (pt, ph, pw) != (T, H, W):
                q = F.interpolate(q, size=(T, H, W), mode=INTERPOLATE_UP).contiguous()
            residual = residual - q
            quantized_out = quantized_out + q
            bits.append(b)
        return quantized_out.squeeze(2), bits
