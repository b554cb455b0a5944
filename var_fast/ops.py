"""Public Python names of var_fast's native ops (``torch.ops.var_fast.*``).

Each wrapper only fills defaults and calls the op; the dispatcher picks the CPU or CUDA kernel by
the inputs' device, and the kernels check their inputs (shape, dtype, device) with clear errors.
Plain-PyTorch references of the same semantics live in ``var_fast.reference``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from .native.extension import require


# The operator library the wrappers call: "var_fast", or "var_fast_emu" while the tests run the CUDA
# sources on the CPU through the emulator (tests/emu): same schemas, CPU tensors.
_library = "var_fast"


def _ops():
    if _library == "var_fast":
        require()
    return getattr(torch.ops, _library)


# ---- sampling -------------------------------------------------------------------------------------
def sample_top_k_top_p(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0, seed: int = 0,
                       row_offset: int = 0, status: Optional[torch.Tensor] = None) -> torch.Tensor:
    """logits (B, L, V) -> int64 tokens (B, L), one draw per row after top-k/top-p filtering.

    ``top_k`` <= 0 or >= V and ``top_p`` <= 0 or == 1 disable the filters. Row (b, l) draws from
    Philox keyed by (seed, row_offset + b * L + l): a row's token depends only on its logits, the
    seed and its global index, never on the other rows in the batch.

    Bad rows (NaN, +inf, all -inf) raise; with ``status`` (``new_status(device)``) they set its flags
    instead and nothing waits for the device: ``check_status`` raises the same error later. Under CUDA
    graph capture ``status`` is required (without it the op refuses: its error check would wait).
    """
    return _ops().sample_top_k_top_p(logits, int(top_k), float(top_p), int(seed), int(row_offset), status)


def sample_cfg_top_k_top_p(logits: torch.Tensor, guidance: float, top_k: int = 0, top_p: float = 0.0,
                           seed: int = 0, row_offset: int = 0, status: Optional[torch.Tensor] = None) -> torch.Tensor:
    """logits (2B, L, V) [conditional; unconditional] -> tokens (B, L) of (1+g)*cond - g*uncond."""
    return _ops().sample_cfg_top_k_top_p(logits, float(guidance), int(top_k), float(top_p), int(seed),
                                         int(row_offset), status)


# ---- bitwise sampling (Infinity) ---------------------------------------------------------------------------
def sample_bits(logits: torch.Tensor, tau: float, top_k: int = 0, top_p: float = 0.0, seed: int = 0,
                image_offset: int = 0, status: Optional[torch.Tensor] = None) -> torch.Tensor:
    """logits (B, L, 2D) -> int64 bits (B, L, D): Infinity's per-bit sampling, one draw per bit.

    The last dim holds D pairs (logit of bit 0, logit of bit 1), as upstream's ``logits.reshape(B, -1, 2)``.
    Each pair is scaled by float32(1 / tau); ``top_k == 1`` keeps the larger logit (both on a tie), 0 or >= 2
    keeps both; ``top_p`` in (0, 1) drops the smaller one when its probability is <= 1 - top_p. Bit (b, l, d)
    draws from Philox keyed by (seed, image_offset + b, l, d): an image's bits depend only on its logits, the
    seed and its global index. Bad pairs (NaN, +inf, both -inf) raise, or set ``status`` as
    ``sample_top_k_top_p`` does (required under CUDA graph capture). Semantics in
    csrc/include/var_fast/bitwise_sampling.cuh; reference in ``var_fast.reference.bitwise_sampling``.
    """
    return _ops().sample_bits(logits, float(tau), int(top_k), float(top_p), int(seed), int(image_offset), status)


def sample_cfg_bits(logits: torch.Tensor, cfg: float, tau: float, top_k: int = 0, top_p: float = 0.0, seed: int = 0,
                    image_offset: int = 0, status: Optional[torch.Tensor] = None) -> torch.Tensor:
    """logits (2B, L, 2D) [conditional; unconditional] -> bits (B, L, D) of upstream's CFG mix
    ``cfg * c + (1 - cfg) * u`` of the tau-scaled logits (each product and the sum rounded to float32)."""
    return _ops().sample_cfg_bits(logits, float(cfg), float(tau), int(top_k), float(top_p), int(seed),
                                  int(image_offset), status)


# ---- AdaLN-modulated attention -----------------------------------------------------------------------
def adaln_modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm(x) (no affine, float32 statistics) * (1 + scale) + shift; x (B, L, C), scale/shift (B, 1, C)."""
    return _ops().adaln_modulate(x, scale, shift, float(eps))


def qkv_to_cache(qkv: torch.Tensor, q_bias: torch.Tensor, v_bias: torch.Tensor, head_scale: Optional[torch.Tensor],
                 k_cache: torch.Tensor, v_cache: torch.Tensor, offset: int,
                 rope: Optional[torch.Tensor] = None) -> torch.Tensor:
    """QKV epilogue of one scale: qkv (B, L, 3C) -> q (B, H, L, c); k, v written into the caches
    (B, H, Lmax, c) at ``offset``. With ``head_scale`` (H,), q and k are L2-normalised per head and q is
    multiplied by head_scale (the reference's attn_l2_norm). With ``rope`` (2, L, c/2) float32, the cos and
    sin of this scale's L positions (a slice of ``infinity.rope2d.rope_cache``), q and k are then rotated
    pairwise (2i, 2i+1) as ``rope2d.apply_rope`` does (Infinity); q is returned and k cached rotated."""
    return _ops().qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, int(offset), rope)


def cached_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv_len: int,
                     scale: float) -> torch.Tensor:
    """softmax(scale * q k^T) v over the first ``kv_len`` cached positions; q (B, H, L, c) -> (B, L, H*c)."""
    return _ops().cached_attention(q, k_cache, v_cache, int(kv_len), float(scale))


def gated_residual(x: torch.Tensor, y: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """x + gamma * y, gamma (B, 1, C)."""
    return _ops().gated_residual(x, y, gamma)


def gated_residual_adaln(x: torch.Tensor, y: torch.Tensor, gamma: torch.Tensor, scale: torch.Tensor,
                         shift: torch.Tensor, eps: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """``gated_residual`` then ``adaln_modulate`` of its result, in one pass and one launch:
    (out, h) with out = x + gamma * y and h = LayerNorm(out) * (1 + scale) + shift; gamma, scale, shift
    (B, 1, C). The values are those of the two ops in sequence."""
    return _ops().gated_residual_adaln(x, y, gamma, scale, shift, float(eps))


def bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GELU(x + bias), tanh approximation (VAR's ``nn.GELU(approximate='tanh')``); x (..., N), bias (N,).
    The epilogue of fc1 after a bias-free GEMM: one launch instead of the bias add and the GELU."""
    return _ops().bias_gelu(x, bias)


# ---- multi-scale residual quantization -----------------------------------------------------------------
def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """z (N, C), codebook (V, C) -> int64 (N,) index of the nearest code (squared L2, lowest index on ties)."""
    return _ops().nearest_code(z, codebook)


def area_downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size) as ``F.interpolate(mode='area')``."""
    return _ops().area_downsample(x, int(size))


def bicubic_upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, size, size) as ``F.interpolate(mode='bicubic', align_corners=False)``."""
    return _ops().bicubic_upsample(x, int(size))


def phi_blend(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ratio: float) -> torch.Tensor:
    """(1 - ratio) * h + ratio * conv3x3(h) — the quantizer's Phi refinement."""
    return _ops().phi_blend(h, weight, bias, float(ratio))


def quant_sampler_step(tokens: torch.Tensor, codebook: torch.Tensor, f_hat: torch.Tensor, phi_weight: torch.Tensor,
                       phi_bias: torch.Tensor, ratio: float, next_size: int,
                       status: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One scale of the sampler: add the Phi-refined, upsampled code map of ``tokens`` (B, pn*pn) to
    ``f_hat`` (in place) and return f_hat area-downsampled to ``next_size`` (empty when 0).

    Tokens outside [0, V) raise; with ``status`` they set its flag instead (f_hat is then unspecified).
    Under CUDA graph capture ``status`` is required (without it the op refuses: its token check would wait)."""
    return _ops().quant_sampler_step(tokens, codebook, f_hat, phi_weight, phi_bias, float(ratio), int(next_size),
                                     status)


def quant_encode(f: torch.Tensor, codebook: torch.Tensor, phi_weights: torch.Tensor, phi_biases: torch.Tensor,
                 phi_index: Sequence[int], ratio: float, patch_nums: Sequence[int]) -> List[torch.Tensor]:
    """Residual quantization of features f (B, C, H, W) over all scales -> tokens [(B, pn*pn)]."""
    return _ops().quant_encode(f, codebook, phi_weights, phi_biases, [int(i) for i in phi_index], float(ratio),
                               [int(p) for p in patch_nums])


# ---- errors found on the device ---------------------------------------------------------------------------
def new_status(device) -> torch.Tensor:
    """A cleared status word for the ``status=`` argument of the sampling ops and quant_sampler_step."""
    return torch.zeros(1, dtype=torch.int32, device=device)


def check_status(status: torch.Tensor, vocab_size: int) -> None:
    """Raises the error the ops that shared ``status`` would have raised (one device-to-host read)."""
    _ops().check_status(status, int(vocab_size))
