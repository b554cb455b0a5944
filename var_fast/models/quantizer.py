"""Multi-scale residual quantizer of the VAR VQVAE (the reference's ``VectorQuantizer2``).

State-dict layout: ``embedding.weight`` (V, Cvae), ``ema_vocab_hit_SV`` (S, V) and the Phi
convolutions under ``quant_resi`` in one of three layouts (non-shared, fully shared, partially
shared), exactly as the reference stores them.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Phi(nn.Conv2d):
    """h -> (1 - r) h + r conv3x3(h)."""

    def __init__(self, channels: int, resi_ratio: float, kernel_size: int = 3):
        super().__init__(channels, channels, kernel_size=kernel_size, stride=1, padding=kernel_size // 2)
        self.resi_ratio = abs(resi_ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.resi_ratio) + super().forward(h).mul_(self.resi_ratio)


def phi_ticks(count: int) -> np.ndarray:
    """Positions in [0, 1] that the reference assigns to ``count`` Phi layers."""
    if count == 4:
        return np.linspace(1 / 3 / count, 1 - 1 / 3 / count, count)
    return np.linspace(1 / 2 / count, 1 - 1 / 2 / count, count)


def phi_index(si: int, num_scales: int, count: int) -> int:
    """Which of ``count`` Phi layers the reference uses at scale ``si`` of ``num_scales``.

    Mirrors the reference exactly: nearest tick to si/(S-1) in float64, first index on ties.
    """
    if count == 1:
        return 0
    return int(np.argmin(np.abs(phi_ticks(count) - si / (num_scales - 1))).item())


class PhiShared(nn.Module):
    def __init__(self, phi: nn.Module):
        super().__init__()
        self.qresi = phi

    def layers(self) -> List[nn.Module]:
        return [self.qresi]


class PhiPartiallyShared(nn.Module):
    def __init__(self, phis: nn.ModuleList):
        super().__init__()
        self.qresi_ls = phis

    def layers(self) -> List[nn.Module]:
        return list(self.qresi_ls)


class PhiNonShared(nn.ModuleList):
    def layers(self) -> List[nn.Module]:
        return list(self)


def _make_phi(channels: int, resi_ratio: float) -> nn.Module:
    return Phi(channels, resi_ratio) if abs(resi_ratio) > 1e-6 else nn.Identity()


class MultiScaleQuantizer(nn.Module):
    def __init__(self, vocab_size: int, Cvae: int, patch_nums: Sequence[int], quant_resi: float = 0.5,
                 share_quant_resi: int = 4, default_qresi_counts: int = 0):
        super().__init__()
        self.vocab_size, self.Cvae = vocab_size, Cvae
        self.v_patch_nums = tuple(int(p) for p in patch_nums)
        self.quant_resi_ratio = quant_resi
        if share_quant_resi == 0:
            count = default_qresi_counts or len(self.v_patch_nums)
            self.quant_resi = PhiNonShared([_make_phi(Cvae, quant_resi) for _ in range(count)])
        elif share_quant_resi == 1:
            self.quant_resi = PhiShared(_make_phi(Cvae, quant_resi))
        else:
            self.quant_resi = PhiPartiallyShared(
                nn.ModuleList([_make_phi(Cvae, quant_resi) for _ in range(share_quant_resi)]))
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.v_patch_nums), vocab_size))
        self.embedding = nn.Embedding(vocab_size, Cvae)

    @property
    def num_scales(self) -> int:
        return len(self.v_patch_nums)

    def phi(self, si: int, num_scales: int | None = None) -> nn.Module:
        """The Phi layer applied to scale ``si``."""
        layers = self.quant_resi.layers()
        return layers[phi_index(si, num_scales or self.num_scales, len(layers))]

    # ---- encoding: features -> per-scale token indices ---------------------------------
    def nearest_code(self, z_NC: torch.Tensor) -> torch.Tensor:
        """argmin_v ||z - e_v||^2, computed as the reference does (same rounding, same ties)."""
        codes = self.embedding.weight.data
        dist = torch.sum(z_NC.square(), dim=1, keepdim=True) + torch.sum(codes.square(), dim=1, keepdim=False)
        dist.addmm_(z_NC, codes.T, alpha=-2, beta=1)
        return torch.argmin(dist, dim=1)

    def f_to_idx(self, f_BChw: torch.Tensor, patch_nums: Sequence[int] | None = None,
                 return_fhat: bool = False) -> List[torch.Tensor]:
        """Residual quantization of features over all scales (reference ``f_to_idxBl_or_fhat``)."""
        B, C, H, W = f_BChw.shape
        pns = tuple(patch_nums or self.v_patch_nums)
        if pns[-1] != H or pns[-1] != W:
            raise ValueError(f"feature map is {H}x{W} but the last patch size is {pns[-1]}")
        f_rest = f_BChw.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        out: List[torch.Tensor] = []
        S = len(pns)
        for si, pn in enumerate(pns):
            if si != S - 1:
                z_NC = F.interpolate(f_rest, size=(pn, pn), mode="area").permute(0, 2, 3, 1).reshape(-1, C)
            else:
                z_NC = f_rest.permute(0, 2, 3, 1).reshape(-1, C)
            idx_N = self.nearest_code(z_NC)
            h = self.embedding(idx_N.view(B, pn, pn)).permute(0, 3, 1, 2)
            if si != S - 1:
                h = F.interpolate(h, size=(H, W), mode="bicubic")
            h = self.phi(si, S)(h.contiguous())
            f_hat.add_(h)
            f_rest.sub_(h)
            out.append(f_hat.clone() if return_fhat else idx_N.reshape(B, pn * pn))
        return out

    # ---- decoding: tokens -> f_hat ------------------------------------------------------
    def idx_to_fhat(self, idx_Bl: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum of the upsampled, Phi-refined code maps of every scale (reference ``embed_to_fhat``)."""
        B = idx_Bl[0].shape[0]
        HW = self.v_patch_nums[-1]
        S = self.num_scales
        f_hat = self.embedding.weight.new_zeros(B, self.Cvae, HW, HW, dtype=torch.float32)
        for si, idx in enumerate(idx_Bl):
            pn = round(idx.shape[1] ** 0.5)
            h = self.embedding(idx).transpose(1, 2).view(B, self.Cvae, pn, pn)
            if si < S - 1:
                h = F.interpolate(h, size=(HW, HW), mode="bicubic")
            f_hat.add_(self.phi(si, S)(h))
        return f_hat

    # ---- sampling: one scale's tokens -> f_hat update and the next scale's input -----------
    def next_autoregressive_input(self, si: int, f_hat: torch.Tensor, h_BChw: torch.Tensor):
        """Add scale ``si``'s embedded tokens to ``f_hat`` (in place); return f_hat and the next input."""
        S = self.num_scales
        HW = self.v_patch_nums[-1]
        if si != S - 1:
            h = self.phi(si)(F.interpolate(h_BChw, size=(HW, HW), mode="bicubic"))
            f_hat.add_(h)
            pn = self.v_patch_nums[si + 1]
            return f_hat, F.interpolate(f_hat, size=(pn, pn), mode="area")
        f_hat.add_(self.phi(si)(h_BChw))
        return f_hat, f_hat
