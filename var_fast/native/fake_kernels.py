"""Fake (meta) kernels of the native ops: shapes and dtypes only, for torch.compile and tracing."""
from __future__ import annotations

import torch


def _register(name):
    return torch.library.register_fake(f"var_fast::{name}")


@_register("sample_top_k_top_p")
def _(logits, top_k, top_p, seed, row_offset=0, status=None):
    return logits.new_empty(logits.shape[:2], dtype=torch.int64)


@_register("sample_cfg_top_k_top_p")
def _(logits, guidance, top_k, top_p, seed, row_offset=0, status=None):
    torch._check(logits.shape[0] % 2 == 0, lambda: "logits must hold a CFG-doubled batch (2B, L, V)")
    return logits.new_empty((logits.shape[0] // 2, logits.shape[1]), dtype=torch.int64)


@_register("sample_bits")
def _(logits, tau, top_k=0, top_p=0.0, seed=0, image_offset=0, status=None):
    torch._check(logits.shape[2] % 2 == 0, lambda: "logits' last dim must hold pairs of bit logits (2D)")
    return logits.new_empty((logits.shape[0], logits.shape[1], logits.shape[2] // 2), dtype=torch.int64)


@_register("sample_cfg_bits")
def _(logits, cfg, tau, top_k=0, top_p=0.0, seed=0, image_offset=0, status=None):
    torch._check(logits.shape[0] % 2 == 0, lambda: "logits must hold a CFG-doubled batch (2B, L, 2D)")
    torch._check(logits.shape[2] % 2 == 0, lambda: "logits' last dim must hold pairs of bit logits (2D)")
    return logits.new_empty((logits.shape[0] // 2, logits.shape[1], logits.shape[2] // 2), dtype=torch.int64)


@_register("adaln_modulate")
def _(x, scale, shift, eps=1e-6):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@_register("qkv_to_cache")
def _(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset, rope=None):
    B, L, _ = qkv.shape
    _, H, _, c = k_cache.shape
    return qkv.new_empty((B, H, L, c))


@_register("cached_attention")
def _(q, k_cache, v_cache, kv_len, scale):
    B, H, L, c = q.shape
    return q.new_empty((B, L, H * c))


@_register("gated_residual")
def _(x, y, gamma):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@_register("gated_residual_adaln")
def _(x, y, gamma, scale, shift, eps=1e-6):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(x, memory_format=torch.contiguous_format))


@_register("bias_gelu")
def _(x, bias):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@_register("nearest_code")
def _(z, codebook):
    return z.new_empty((z.shape[0],), dtype=torch.int64)


@_register("area_downsample")
def _(x, size):
    return x.new_empty((x.shape[0], x.shape[1], size, size))


@_register("bicubic_upsample")
def _(x, size):
    return x.new_empty((x.shape[0], x.shape[1], size, size))


@_register("phi_blend")
def _(h, weight, bias, ratio):
    return torch.empty_like(h, memory_format=torch.contiguous_format)


@_register("quant_sampler_step")
def _(tokens, codebook, f_hat, phi_weight, phi_bias, ratio, next_size, status=None):
    if next_size == 0:
        return f_hat.new_empty((0,))
    return f_hat.new_empty((f_hat.shape[0], f_hat.shape[1], next_size, next_size))


@_register("quant_encode")
def _(f, codebook, phi_weights, phi_biases, phi_index, ratio, patch_nums):
    return [f.new_empty((f.shape[0], pn * pn), dtype=torch.int64) for pn in patch_nums]


@_register("check_status")
def _(status, vocab_size):
    return None
