"""Configurations of the Infinity transformer and its BSQ VAE, read off their weights.

Everything the state-dict keys and shapes reveal is read from them (depth, width, heads, bits,
patchify, text channels, FFN kind, norms, ...). What they cannot reveal is the same for every
published checkpoint (FoundationVision/Infinity, scripts/infer.sh and the 8B notebooks at commit
4c27bbb) and is a documented default here:

- ``rope2d_normalized_by_hw=2`` ("star" RoPE2d normalisation by the template's 1M grid),
- ``add_lvl_embeding_only_first_block=1`` (level embedding added before the first block chunk only),
- ``text_maxlen=512`` (``cfg_uncond`` rows; a checkpoint with fewer or more rows is adapted as upstream),
- ``norm_eps=1e-6``, the GELU(tanh) MLPs, cosine self-attention (``scale_mul_1H11``).

Detection uses shapes only, so it also works on meta tensors.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Mapping, Tuple

import torch

from ..checkpoint import CheckpointError, looks_like_var

StateDict = Mapping[str, torch.Tensor]

TEXT_MAXLEN = 512  # tools/run_infinity.py: load_infinity(text_maxlen=512)
NUM_LEVEL_EMBEDDINGS = 15  # Infinity.lvl_embed = nn.Embedding(15, C)


@dataclass(frozen=True)
class InfinityConfig:
    depth: int
    embed_dim: int
    num_heads: int
    mlp_hidden: int
    text_channels: int
    pool_heads: int                 # heads of text_proj_for_sos (Ct5 // 128, or // 64 above width 4096)
    d_vae: int                      # word_embed input = bits per token (4 * VAE bits with patchify)
    block_chunks: int = 1           # 0: flat ``blocks.{i}`` keys; n: ``block_chunks.{c}.module.{j}`` keys
    shared_aln: bool = True
    swiglu: bool = False
    rms_norm: bool = False
    nm0: bool = False
    head_aln: bool = True
    head_depth: int = 1
    ca_gamma: bool = False          # cross_attn_layer_scale >= 0 (a learnable ca_gamma per block)
    rand_uncond: bool = False       # cfg_uncond a buffer (not in the checkpoint's parameters; still a key)
    text_maxlen: int = TEXT_MAXLEN
    norm_eps: float = 1e-6
    # not in the keys: fixed for every published checkpoint (see the module docstring)
    rope2d_normalized_by_hw: int = 2
    add_lvl_embeding_only_first_block: int = 1

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def blocks_per_chunk(self) -> int:
        return self.depth // max(1, self.block_chunks)

    @property
    def bits_out(self) -> int:
        """Bit logits per token (two per bit)."""
        return 2 * self.d_vae


@dataclass(frozen=True)
class BSQVAEConfig:
    codebook_dim: int               # bits per token (z channels)
    ch: int = 128
    encoder_ch_mult: Tuple[int, ...] = (1, 2, 4, 4, 4)
    decoder_ch_mult: Tuple[int, ...] = (1, 2, 4, 4, 4)
    num_res_blocks: int = 2
    encoder_down_levels: Tuple[int, ...] = (0, 1, 2, 3)   # levels with a Downsample
    decoder_up_levels: Tuple[int, ...] = (1, 2, 3, 4)     # levels with an Upsample
    in_channels: int = 3

    @property
    def downsample(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** len(self.decoder_up_levels)


def _indices(sd: StateDict, pattern: str) -> List[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd for m in [rx.match(k)] if m})


def _require(sd: StateDict, keys, path: str, what: str, hint: str = "") -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise CheckpointError(f"{path!r} is not {what} checkpoint: it has no {', '.join(repr(k) for k in missing)}"
                              + (f" ({hint})" if hint else ""))


def looks_like_infinity(sd: StateDict) -> bool:
    return "word_embed.weight" in sd and "lvl_embed.weight" in sd and "text_proj_for_sos.ca.mat_q" in sd


def looks_like_bsq_vae(sd: StateDict) -> bool:
    return "encoder.conv_in.conv.weight" in sd or ("encoder.conv_in.weight" in sd and "decoder.conv_in.weight" in sd
                                                   and not any(k.startswith("quantize.embedding") for k in sd))


def block_prefixes(sd: StateDict, path: str) -> Tuple[int, List[str]]:
    """(block_chunks, ["block_chunks.0.module.0.", ...]) in block order; block_chunks 0 = flat ``blocks.i.``."""
    chunks = _indices(sd, r"block_chunks\.(\d+)\.module\.")
    if chunks:
        per = [_indices(sd, rf"block_chunks\.{c}\.module\.(\d+)\.") for c in chunks]
        if chunks != list(range(len(chunks))) or any(p != per[0] for p in per) or per[0] != list(range(len(per[0]))):
            raise CheckpointError(f"{path!r}: block chunks are uneven or not numbered 0..n-1 "
                                  f"({len(chunks)} chunks with {[len(p) for p in per]} blocks)")
        return len(chunks), [f"block_chunks.{c}.module.{j}." for c in chunks for j in per[0]]
    flat = _indices(sd, r"blocks\.(\d+)\.")
    if not flat or flat != list(range(len(flat))):
        raise CheckpointError(f"{path!r} is not an Infinity transformer checkpoint: it has no transformer blocks "
                              f"('block_chunks.0.module.0.*' or 'blocks.0.*')")
    return 0, [f"blocks.{i}." for i in flat]


def infinity_config_from_state_dict(sd: StateDict, path: str = "<state dict>", *,
                                    rope2d_normalized_by_hw: int = 2,
                                    add_lvl_embeding_only_first_block: int = 1) -> InfinityConfig:
    """Configuration of an Infinity transformer read off its weights (shapes only)."""
    if looks_like_bsq_vae(sd) and not looks_like_infinity(sd):
        raise CheckpointError(f"{path!r} is a BSQ VAE checkpoint, but an Infinity transformer checkpoint was expected "
                              f"(did you swap the transformer and VAE files?)")
    if looks_like_var(sd):
        raise CheckpointError(f"{path!r} is a VAR (class-conditional) transformer checkpoint, not an Infinity "
                              f"text-to-image one (it has class_emb and pos_1LC; load it with var_fast.load)")
    _require(sd, ["word_embed.weight", "lvl_embed.weight", "pos_start", "cfg_uncond", "text_norm.weight",
                  "text_proj_for_sos.ca.mat_q", "text_proj_for_ca.0.weight"], path, "an Infinity transformer")
    block_chunks, prefixes = block_prefixes(sd, path)
    b0 = prefixes[0]
    _require(sd, [b0 + "sa.mat_qkv.weight", b0 + "sa.scale_mul_1H11", b0 + "ca.mat_kv.weight",
                  b0 + "ffn.fc1.weight", b0 + "ffn.fc2.weight"], path, "an Infinity transformer",
             "cosine self-attention with scale_mul_1H11 and cross-attention blocks are expected")
    C, d_vae = sd["word_embed.weight"].shape
    scale_mul = sd[b0 + "sa.scale_mul_1H11"].shape
    if len(scale_mul) != 4 or scale_mul[0] != 1 or scale_mul[2] != 1:
        raise CheckpointError(f"{path!r}: {b0}sa.scale_mul_1H11 has shape {tuple(scale_mul)}, expected (1, heads, 1, 1) "
                              f"(a checkpoint saved with the customized flash-attention layout (1, 1, heads, 1) is not supported)")
    heads = scale_mul[1]
    if C % heads:
        raise CheckpointError(f"{path!r}: width {C} is not divisible by {heads} heads")
    text_maxlen_ckpt, Ct5 = sd["cfg_uncond"].shape
    pool_q = sd["text_proj_for_sos.ca.mat_q"].shape       # (1, heads, head_dim)
    if len(pool_q) != 3 or pool_q[1] * pool_q[2] != C:
        raise CheckpointError(f"{path!r}: text_proj_for_sos.ca.mat_q has shape {tuple(pool_q)}, expected (1, heads, {C} // heads)")
    swiglu = b0 + "ffn.fcg.weight" in sd
    rms = b0 + "ca_norm.bias" not in sd
    head_aln = "head_nm.ada_lin.1.weight" in sd
    if head_aln:   # head = Linear, or Sequential(Linear, GELU, Linear)
        head_depth = 1 if "head.weight" in sd else 2
    else:          # head = Sequential(norm, Linear), or Sequential(norm, Linear, GELU, Linear)
        head_depth = 2 if "head.3.weight" in sd else 1
    head_out_key = ("head.weight" if head_depth == 1 else "head.2.weight") if head_aln else \
                   ("head.1.weight" if head_depth == 1 else "head.3.weight")
    _require(sd, [head_out_key], path, "an Infinity transformer")
    V = sd[head_out_key].shape[0]
    if V != 2 * d_vae:
        raise CheckpointError(f"{path!r}: the head predicts {V} logits per token, but a bit-label model "
                              f"(use_bit_label=1, the only kind published) predicts 2 per bit = {2 * d_vae}")
    shared = b0 + "ada_gss" in sd
    if shared:
        _require(sd, ["shared_ada_lin.1.weight"], path, "a shared-AdaLN Infinity transformer")
    if sd["lvl_embed.weight"].shape[0] != NUM_LEVEL_EMBEDDINGS:
        raise CheckpointError(f"{path!r}: lvl_embed has {sd['lvl_embed.weight'].shape[0]} rows, expected {NUM_LEVEL_EMBEDDINGS}")
    if rope2d_normalized_by_hw not in (0, 1, 2):
        raise ValueError(f"rope2d_normalized_by_hw must be 0, 1 or 2, got {rope2d_normalized_by_hw}")
    if add_lvl_embeding_only_first_block not in (0, 1):
        raise ValueError(f"add_lvl_embeding_only_first_block must be 0 or 1, got {add_lvl_embeding_only_first_block}")
    return InfinityConfig(
        depth=len(prefixes), embed_dim=C, num_heads=heads,
        mlp_hidden=sd[b0 + "ffn.fc1.weight"].shape[0], text_channels=Ct5, pool_heads=pool_q[1], d_vae=d_vae,
        block_chunks=block_chunks, shared_aln=shared, swiglu=swiglu, rms_norm=rms,
        nm0="norm0_ve.weight" in sd, head_aln=head_aln, head_depth=head_depth, ca_gamma=b0 + "ca_gamma" in sd,
        text_maxlen=TEXT_MAXLEN, rope2d_normalized_by_hw=rope2d_normalized_by_hw,
        add_lvl_embeding_only_first_block=add_lvl_embeding_only_first_block)


def bsq_vae_config_from_state_dict(sd: StateDict, path: str = "<state dict>") -> BSQVAEConfig:
    """Configuration of a BSQ VAE (infinity_vae_*.pth layout, keys as upstream's AutoEncoder) read off its weights."""
    if looks_like_infinity(sd):
        raise CheckpointError(f"{path!r} is an Infinity transformer checkpoint, but a BSQ VAE checkpoint was expected "
                              f"(did you swap the transformer and VAE files?)")
    if "quantize.embedding.weight" in sd:
        raise CheckpointError(f"{path!r} is a VAR VQVAE checkpoint (it has a codebook, quantize.embedding.weight), "
                              f"not an Infinity BSQ VAE")
    if looks_like_var(sd):
        raise CheckpointError(f"{path!r} is a VAR transformer checkpoint, not an Infinity BSQ VAE")
    _require(sd, ["encoder.conv_in.conv.weight", "encoder.conv_out.conv.weight", "decoder.conv_in.conv.weight",
                  "decoder.conv_out.conv.weight", "decoder.norm_out.norm.weight"], path, "a BSQ VAE")
    ch = sd["encoder.conv_in.conv.weight"].shape[0]
    enc_levels = _indices(sd, r"encoder\.down\.(\d+)\.")
    dec_levels = _indices(sd, r"decoder\.up\.(\d+)\.")
    if not enc_levels or not dec_levels:
        raise CheckpointError(f"{path!r} is not a BSQ VAE checkpoint: no encoder.down.* / decoder.up.* blocks")
    enc_mult = tuple(sd[f"encoder.down.{i}.block.0.conv1.conv.weight"].shape[0] // ch for i in enc_levels)
    dec_mult = tuple(sd[f"decoder.up.{i}.block.0.conv1.conv.weight"].shape[0] // ch for i in dec_levels)
    nrb = len(_indices(sd, r"encoder\.down\.0\.block\.(\d+)\."))
    dec_nrb = len(_indices(sd, r"decoder\.up\.0\.block\.(\d+)\."))
    if dec_nrb != nrb + 1:
        raise CheckpointError(f"{path!r}: the decoder has {dec_nrb} res blocks per level, expected the encoder's {nrb} + 1")
    z = sd["decoder.conv_in.conv.weight"].shape[1]
    enc_out = sd["encoder.conv_out.conv.weight"].shape[0]
    if enc_out != z:
        raise CheckpointError(f"{path!r}: encoder output {enc_out} channels, decoder input {z} "
                              f"(a KL VAE with use_vae=1 is not a BSQ VAE)")
    if any(".attn_1." in k for k in sd):
        # cnn_attention='yes': upstream's AttnBlock takes 5-D video tensors only; no published VAE has it
        raise CheckpointError(f"{path!r}: a BSQ VAE with mid-block attention (cnn_attention='yes') is not supported")
    return BSQVAEConfig(
        codebook_dim=z, ch=ch, encoder_ch_mult=enc_mult, decoder_ch_mult=dec_mult, num_res_blocks=nrb,
        encoder_down_levels=tuple(i for i in enc_levels if f"encoder.down.{i}.downsample.conv.conv.weight" in sd),
        decoder_up_levels=tuple(i for i in dec_levels if f"decoder.up.{i}.upsample.conv.conv.weight" in sd),
        in_channels=sd["encoder.conv_in.conv.weight"].shape[1])


def check_pair(cfg: InfinityConfig, vae_cfg: BSQVAEConfig, transformer_path: str = "<transformer>",
               vae_path: str = "<vae>") -> bool:
    """Whether the pair uses spatial patchify (transformer bits = 4 x VAE bits); CheckpointError if they do not fit."""
    d = vae_cfg.codebook_dim
    if cfg.d_vae == d:
        return False
    if cfg.d_vae == 4 * d:
        return True
    raise CheckpointError(f"transformer {transformer_path!r} reads {cfg.d_vae} bits per token, but VAE {vae_path!r} "
                          f"has {d} bits (expected {d}, or {4 * d} with spatial patchify)")
