"""Plain-PyTorch references of the multi-scale residual quantization ops (``var_fast.ops``).

Each function computes exactly what :class:`var_fast.models.quantizer.MultiScaleQuantizer` computes
(same ops in the same order), in float32 whatever the input dtype, and returns the input's dtype
(tokens are int64; the sampler step's ``f_hat`` is float32 as in the model).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F


def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """z (N, C), codebook (V, C) -> int64 (N,): argmin of ||z||^2 + ||e||^2 - 2 z.e (float32 GEMM)."""
    z = z.float().contiguous()  # the model always hands a contiguous (N, C) matrix
    codes = codebook.float().contiguous()
    dist = torch.sum(z.square(), dim=1, keepdim=True) + torch.sum(codes.square(), dim=1, keepdim=False)
    dist.addmm_(z, codes.T, alpha=-2, beta=1)
    return torch.argmin(dist, dim=1)


def area_downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size), ``F.interpolate(mode='area')``."""
    return F.interpolate(x.float(), size=(size, size), mode="area").to(x.dtype)


def bicubic_upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, size, size), ``F.interpolate(mode='bicubic', align_corners=False)``."""
    return F.interpolate(x.float(), size=(size, size), mode="bicubic", align_corners=False).to(x.dtype)


def phi_blend(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ratio: float) -> torch.Tensor:
    """(1 - ratio) h + ratio (conv3x3(h) + bias): the model's ``Phi.forward``."""
    hf = h.float()
    out = hf.mul(1 - ratio) + F.conv2d(hf, weight.float(), bias.float(), padding=1).mul_(ratio)
    return out.to(h.dtype)


def _code_map(tokens: torch.Tensor, codebook: torch.Tensor, pn: int) -> torch.Tensor:
    """tokens (B, pn*pn) -> (B, C, pn, pn) rows of the codebook, as ``embedding(...).transpose(1, 2)``."""
    B = tokens.shape[0]
    return F.embedding(tokens, codebook.float()).transpose(1, 2).reshape(B, codebook.shape[1], pn, pn)


def quant_sampler_step(tokens: torch.Tensor, codebook: torch.Tensor, f_hat: torch.Tensor, phi_weight: torch.Tensor,
                       phi_bias: torch.Tensor, ratio: float, next_size: int) -> torch.Tensor:
    """The model's ``next_autoregressive_input`` for one scale: f_hat += Phi(upsampled code map) in place;
    returns f_hat area-downsampled to ``next_size`` (an empty tensor when ``next_size`` is 0)."""
    B, C, H, W = f_hat.shape
    pn = round(tokens.shape[1] ** 0.5)
    h = _code_map(tokens, codebook, pn)
    if (pn, pn) != (H, W):
        h = F.interpolate(h, size=(H, W), mode="bicubic")
    f_hat.add_(phi_blend(h.contiguous(), phi_weight, phi_bias, ratio))
    if next_size == 0:
        return f_hat.new_empty((0,))
    return F.interpolate(f_hat, size=(next_size, next_size), mode="area")


def quant_encode(f: torch.Tensor, codebook: torch.Tensor, phi_weights: torch.Tensor, phi_biases: torch.Tensor,
                 phi_index: Sequence[int], ratio: float, patch_nums: Sequence[int]) -> List[torch.Tensor]:
    """The model's ``f_to_idx``: residual quantization of f (B, C, H, W) -> tokens [(B, pn*pn)]."""
    B, C, H, W = f.shape
    if patch_nums[-1] != H or patch_nums[-1] != W:
        raise ValueError(f"feature map is {H}x{W} but the last patch size is {patch_nums[-1]}")
    f_rest = f.detach().float().clone()
    f_hat = torch.zeros_like(f_rest)
    S = len(patch_nums)
    out: List[torch.Tensor] = []
    for si, pn in enumerate(patch_nums):
        if si != S - 1:
            z = F.interpolate(f_rest, size=(pn, pn), mode="area").permute(0, 2, 3, 1).reshape(-1, C)
        else:
            z = f_rest.permute(0, 2, 3, 1).reshape(-1, C)
        idx = nearest_code(z, codebook)
        h = F.embedding(idx.view(B, pn, pn), codebook.float()).permute(0, 3, 1, 2)
        if si != S - 1:
            h = F.interpolate(h, size=(H, W), mode="bicubic")
        k = phi_index[si]
        h = phi_blend(h.contiguous(), phi_weights[k], phi_biases[k], ratio)
        f_hat.add_(h)
        f_rest.sub_(h)
        out.append(idx.reshape(B, pn * pn))
    return out
