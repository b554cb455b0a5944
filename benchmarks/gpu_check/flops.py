"""FLOPs of one sampled image, counted analytically from the configs (multiply-add = 2 FLOPs).

Only the matrix work that any implementation must do is counted: the transformer's linear layers,
attention over the cached keys (Q K^T and P V, over all kv positions of the scale), the head, on both
halves of the CFG-doubled batch; AdaLN projections once per image (they do not change across scales);
the VQVAE decoder's convolutions and spatial attention. Norms, activations, sampling and the
quantizer are left out (a few per cent at most), so the floor is a lower bound on the time.
"""
from __future__ import annotations

from typing import Dict

from var_fast.models import VARConfig, VQVAEConfig


def transformer_flops(cfg: VARConfig, cfg_doubled: bool = True) -> Dict[str, float]:
    """FLOPs per image of the whole autoregressive pass, by part."""
    C, D, M, V = cfg.embed_dim, cfg.embed_dim, cfg.mlp_hidden, cfg.vocab_size
    seqs = 2 if cfg_doubled else 1
    parts = dict(linear=0.0, attention=0.0, head=0.0, embed=0.0, adaln=0.0)
    kv = 0
    for si, pn in enumerate(cfg.patch_nums):
        l = pn * pn
        kv += l
        per_block = 2 * l * C * (3 * C + C + 2 * M)
        parts["linear"] += seqs * cfg.depth * per_block
        parts["attention"] += seqs * cfg.depth * 2 * (2 * l * kv * C)
        parts["head"] += seqs * 2 * l * C * V
        if si > 0:
            parts["embed"] += 2 * l * cfg.Cvae * C  # word_embed, once before the batch is doubled
    ada_blocks = 1 if cfg.shared_aln else cfg.depth
    parts["adaln"] = seqs * 2 * D * (6 * C * ada_blocks + 2 * C)
    return parts


def _conv(cin: int, cout: int, k: int, hw: int) -> float:
    return 2.0 * cin * cout * k * k * hw


def _resnet(cin: int, cout: int, hw: int) -> float:
    f = _conv(cin, cout, 3, hw) + _conv(cout, cout, 3, hw)
    return f + (_conv(cin, cout, 1, hw) if cin != cout else 0.0)


def _attn(c: int, hw: int) -> float:
    return _conv(c, 3 * c, 1, hw) + _conv(c, c, 1, hw) + 2 * (2.0 * hw * hw * c)


def decoder_flops(cfg: VQVAEConfig) -> float:
    """FLOPs per image of post_quant_conv + the decoder (as var_fast.models.vae_blocks.Decoder)."""
    n = len(cfg.ch_mult)
    side = cfg.patch_nums[-1]
    hw = side * side
    block_in = cfg.ch * cfg.ch_mult[-1]
    f = _conv(cfg.z_channels, cfg.z_channels, cfg.quant_conv_ks, hw)  # post_quant_conv
    f += _conv(cfg.z_channels, block_in, 3, hw) + 2 * _resnet(block_in, block_in, hw)
    if cfg.using_mid_sa:
        f += _attn(block_in, hw)
    for level in reversed(range(n)):
        block_out = cfg.ch * cfg.ch_mult[level]
        for _ in range(cfg.num_res_blocks + 1):
            f += _resnet(block_in, block_out, hw)
            block_in = block_out
            if level == n - 1 and cfg.using_sa:
                f += _attn(block_in, hw)
        if level != 0:
            side *= 2
            hw = side * side
            f += _conv(block_in, block_in, 3, hw)
    return f + _conv(block_in, 3, 3, hw)


def image_flops(var_cfg: VARConfig, vae_cfg: VQVAEConfig) -> Dict[str, float]:
    t = sum(transformer_flops(var_cfg).values())
    d = decoder_flops(vae_cfg)
    return dict(transformer=t, decoder=d, total=t + d)


def floor_fraction(flops: float, peak_flops_per_s: float, seconds: float) -> float:
    """The share of the measured peak rate the run reached: (flops / peak) / seconds."""
    return flops / peak_flops_per_s / seconds


# ---- Infinity (text to image) -----------------------------------------------------------------------------------
def infinity_flops(cfg, schedule, text_tokens: int, cfg_doubled: bool = True) -> Dict[str, float]:
    """FLOPs per image of Infinity's whole autoregressive pass (``cfg``: an InfinityConfig; ``schedule``: the
    (1, h, w) scales; ``text_tokens``: the prompt's T5 tokens), by part, counted as for VAR: matrix work only,
    on both CFG halves (the conditional and the unconditional prompt) when ``cfg_doubled``.

    - linear: every block's self-attention qkv and proj, cross-attention q and proj, FFN (2 matrices, 3 with
      SwiGLU), for each token of each scale;
    - self_attention: Q K^T and P V of each scale's l queries over the kv tokens cached so far (all scales up
      to this one: Infinity's scales attend to every earlier token and to their own);
    - cross_attention: Q K^T and P V of each scale's queries over the prompt's text tokens;
    - text: once per image: text_proj_for_ca (2 linears), every block's text K/V projection, the text pool
      (its K/V projection, one query's attention, its output projection);
    - adaln: the shared (or per-block) AdaLN projection and the head's AdaLN, once per image;
    - head: the bit logits (2 per bit) of every token (on both halves: CFG mixes logits);
    - embed: word_embed of scales 1.. (once, before the batch is doubled).
    Norms, RoPE, the level embedding, sampling and the BSQ updates are left out."""
    C, D, M, Ct5, T = cfg.embed_dim, cfg.embed_dim, cfg.mlp_hidden, cfg.text_channels, text_tokens
    seqs = 2 if cfg_doubled else 1
    ffn_mats = 3 if cfg.swiglu else 2
    parts = dict(linear=0.0, self_attention=0.0, cross_attention=0.0, text=0.0, adaln=0.0, head=0.0, embed=0.0)
    kv = 0
    for si, (_, h, w) in enumerate(schedule):
        l = h * w
        kv += l
        parts["linear"] += seqs * cfg.depth * 2 * l * (6 * C * C + ffn_mats * C * M)
        parts["self_attention"] += seqs * cfg.depth * 2 * (2 * l * kv * C)
        parts["cross_attention"] += seqs * cfg.depth * 2 * (2 * l * T * C)
        parts["head"] += seqs * 2 * l * C * (cfg.bits_out + (C if cfg.head_depth == 2 else 0))
        if si > 0:
            parts["embed"] += 2 * l * cfg.d_vae * C
    pool = 2 * T * Ct5 * 2 * D + 2 * (2 * T * D) + 2 * D * D
    parts["text"] = seqs * (2 * T * (Ct5 * D + D * D) + cfg.depth * 2 * T * C * 2 * C + pool)
    ada_blocks = 1 if cfg.shared_aln else cfg.depth
    parts["adaln"] = seqs * 2 * D * 6 * C * ada_blocks + (seqs * 2 * D * 2 * C if cfg.head_aln else 0)
    return parts


def infinity_image_flops(cfg, schedule, text_tokens: int, cfg_doubled: bool = True) -> float:
    return sum(infinity_flops(cfg, schedule, text_tokens, cfg_doubled).values())
