"""Peak GPU memory of Infinity sampling, estimated from the model's shapes (no weights, no GPU needed).

``var-fast info --model infinity-2b`` prints these for every memory option; ``InfinitySampler`` picks its
batch size with ``per_image_bytes`` (docs/infinity.md states the formulas). Everything is counted in bytes:

- weights: the transformer blocks' parameters x bytes per element of the weight dtype (float32 4,
  bfloat16/float16 2), the rest of the transformer and the BSQ VAE in float32 (upstream's bf16=1 keeps them
  there), parameters counted on the models built on the meta device (no download); the T5 encoder's
  parameters (its config's shapes) x its dtype's bytes;
- T5 encoder, by offload mode: "none" keeps its weights on the GPU throughout; "cpu" keeps them in the CPU's
  memory (0 on the GPU); "free" has them on the GPU only while the prompts are encoded, before sampling
  starts, so the peak is the larger of (encoding, sampling) instead of their sum;
- KV cache: depth x 2B (CFG runs the conditional and unconditional batch together) x C x (L x (4 + bytes)
  + 512 x 2 x bytes): the self-attention's keys (float32: normalised and rotated in float32) and values
  (compute dtype) of every scale so far, L = sum of h*w over the schedule (10,521 tokens at 1M, 1:1), and each
  block's cross-attention keys and values of the text (512 tokens: a prompt at the tokenizer's limit);
  the fast backend (``fast=True``) preallocates keys and values of all L tokens in the compute dtype and keeps
  the text's keys and values in float32: depth x 2B x C x (L x 2 x bytes + 512 x 2 x 4);
- activations of the last scale (the largest): 2B x l x C x (2 x 4 + 10 x bytes): the float32 residual stream
  and its update, and in the compute dtype the normed input and the MLP's 4C hidden before and after GELU
  (what is alive at once in a block; attention through PyTorch's SDPA, which needs no l x L score matrix on
  CUDA), l = h*w of the last scale, plus the float32 bit logits 2B x l x 2 x bits x 4;
- VAE decoding: 4 x 256 x H x W x bytes (four 256-channel tensors at the full image resolution alive in
  the decoder's last up-sampling stage), after the transformer's cache is released; InfinitySampler decodes
  one image at a time, whatever the batch.

B is the number of images in one pass: 1 in InfinitySampler's default exact mode (each image sampled alone),
the batch size with ``batched=True``. The KV cache and the activations grow with it (``per_image_bytes``);
the weights and the decoding do not. These are estimates from the shapes, not measurements.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

GiB = 1 << 30
# C-wide tensors of the last scale alive at once in a block: the float32 residual stream and its sum (2), and
# in the compute dtype the normed input, the MLP's 4C hidden before and after GELU (10)
FLOAT32_WIDTHS, COMPUTE_WIDTHS = 2, 10
TEXT_TOKENS = 512  # a prompt's tokens at most (the T5 tokenizer's max_length)
DECODER_TENSORS, DECODER_CHANNELS = 4, 256
CARD_USABLE = 0.9  # of a card's memory (cards sold as "12 GB" have 12 GiB): the CUDA context and slack take the rest


@dataclass(frozen=True)
class InfinityShapes:
    """What the memory estimate needs of an Infinity transformer + BSQ VAE + T5 encoder."""
    name: str
    depth: int
    width: int
    heads: int
    bits: int                        # bits per transformer token (4x the VAE's with spatial patchify)
    transformer_parameters: int
    block_parameters: int            # the part of transformer_parameters in the blocks (half precision)
    vae_parameters: int              # the whole BSQ VAE (encoder + decoder), as the file holds it
    t5_parameters: int = 0           # the T5 encoder alone (shared embedding, blocks, final norm)


def t5_encoder_parameters(d_model: int = 2048, d_ff: int = 5120, layers: int = 24, heads: int = 32, d_kv: int = 64,
                          vocab: int = 32128, buckets: int = 32) -> int:
    """T5 (v1.1 / Flan, gated-GELU) encoder: embedding, per block q,k,v,o + wi_0, wi_1, wo + 2 norms, the
    first block's relative position bias, the final norm. google/flan-t5-xl: 1,223,527,424."""
    inner = heads * d_kv
    block = 4 * d_model * inner + 3 * d_model * d_ff + 2 * d_model
    return vocab * d_model + layers * block + buckets * heads + d_model


# google/flan-t5-xl's config.json (d_model 2048, d_ff 5120, 24 layers, 32 heads of 64, vocabulary 32128)
T5_XL_PARAMETERS = t5_encoder_parameters()
# The published models' shapes (upstream tools/run_infinity.py load_transformer: infinity_2b depth 32, width 2048,
# 16 heads; infinity_8b depth 40, width 3584, 28 heads; both MLP 4x, 2048 text channels, 8 block chunks; VAEs
# (load_visual_tokenizer): infinity_vae_d32reg 32 bits, stride 16 (ch_mult 1,2,4,4,4); infinity_vae_d56_f8_14_patchify
# 14 bits, stride 8 (ch_mult 1,2,4,4), the transformer reading 2x2 of its cells (56 bits) per token)
PUBLISHED = {
    "infinity-2b": (dict(depth=32, embed_dim=2048, num_heads=16, mlp_hidden=8192, text_channels=2048, pool_heads=16,
                         d_vae=32, block_chunks=8), dict(codebook_dim=32)),
    "infinity-8b": (dict(depth=40, embed_dim=3584, num_heads=28, mlp_hidden=14336, text_channels=2048, pool_heads=16,
                         d_vae=56, block_chunks=8),
                    dict(codebook_dim=14, encoder_ch_mult=(1, 2, 4, 4), decoder_ch_mult=(1, 2, 4, 4),
                         encoder_down_levels=(0, 1, 2), decoder_up_levels=(1, 2, 3))),
}
PUBLISHED["infinity-8b-512"] = PUBLISHED["infinity-8b"]


def published_shapes(name: str) -> InfinityShapes:
    """A published model's shapes, its parameters counted on models built on the meta device (no weights)."""
    import torch
    from .bsq_vae import BSQVAE
    from .config import BSQVAEConfig, InfinityConfig
    from .transformer import Infinity
    if name not in PUBLISHED:
        raise ValueError(f"unknown Infinity model {name!r}; known: {', '.join(PUBLISHED)}")
    t_kw, v_kw = PUBLISHED[name]
    with torch.device("meta"):
        model, vae = Infinity(InfinityConfig(**t_kw)), BSQVAE(BSQVAEConfig(**v_kw))
    return InfinityShapes(name, depth=t_kw["depth"], width=t_kw["embed_dim"], heads=t_kw["num_heads"],
                          bits=t_kw["d_vae"], transformer_parameters=sum(p.numel() for p in model.parameters()),
                          block_parameters=sum(p.numel() for b in model.all_blocks() for p in b.parameters()),
                          vae_parameters=sum(p.numel() for p in vae.parameters()), t5_parameters=T5_XL_PARAMETERS)


def element_size(dtype_name: str) -> int:
    return {"float32": 4, "bfloat16": 2, "float16": 2}[dtype_name]


def schedule_tokens(schedule: Sequence[Tuple[int, int, int]]) -> Tuple[int, int]:
    """(L: tokens of every scale, l: tokens of the last scale) of a schedule of (t, h, w)."""
    return sum(h * w for _, h, w in schedule), schedule[-1][1] * schedule[-1][2]


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int            # transformer + VAE on the GPU
    t5_weights: int         # the T5 encoder's weights (on the GPU unless offload is "cpu")
    kv_cache: int           # for the whole batch
    activations: int        # last scale, whole batch
    decode: int             # VAE decoding, whole batch
    t5_offload: str

    @property
    def sampling(self) -> int:
        return self.kv_cache + self.activations

    @property
    def peak(self) -> int:
        """Weights + the larger of sampling and decoding (the cache is released before decoding), with the
        T5 encoder's weights added throughout ("none"), only while encoding ("free") or never ("cpu")."""
        work = max(self.sampling, self.decode)
        if self.t5_offload == "none":
            return self.weights + self.t5_weights + work
        if self.t5_offload == "free":
            return self.weights + max(self.t5_weights, work)
        return self.weights + work


def per_image_bytes(shapes: InfinityShapes, schedule, dtype: str, cfg: bool = True,
                    fast: bool = False) -> Tuple[int, int, int]:
    """(KV cache, activations, decoding) bytes of one image in a pass (``fast``: the fast backend's caches)."""
    e = element_size(dtype)
    L, l = schedule_tokens(schedule)
    rows = 2 if cfg else 1
    if fast:
        # InfinityFastSampler: K and V preallocated for all L tokens in the compute dtype; the text's K and V
        # projected once per call, kept in float32 (bfloat16 values)
        kv = shapes.depth * rows * shapes.width * (L * 2 * e + TEXT_TOKENS * 2 * 4)
    else:
        # self-attention: K is normalised and rotated in float32 (autocast runs norms in float32), V in the
        # compute dtype; cross-attention: the text's K and V in the compute dtype
        kv = shapes.depth * rows * shapes.width * (L * (4 + e) + TEXT_TOKENS * 2 * e)
    act = rows * l * (shapes.width * (FLOAT32_WIDTHS * 4 + COMPUTE_WIDTHS * e) + 2 * shapes.bits * 4)
    H, W = 16 * schedule[-1][1], 16 * schedule[-1][2]
    decode = DECODER_TENSORS * DECODER_CHANNELS * H * W * e
    return kv, act, decode


def estimate(shapes: InfinityShapes, schedule, *, batch: int = 1, dtype: str = "bfloat16",
             t5_dtype: str = "float16", t5_offload: str = "none", cfg: bool = True) -> MemoryEstimate:
    e = element_size(dtype)
    kv, act, decode = per_image_bytes(shapes, schedule, dtype, cfg)
    rest = shapes.transformer_parameters - shapes.block_parameters + shapes.vae_parameters
    return MemoryEstimate(weights=shapes.block_parameters * e + rest * 4,
                          t5_weights=shapes.t5_parameters * element_size(t5_dtype),
                          kv_cache=batch * kv, activations=batch * act, decode=decode, t5_offload=t5_offload)


def largest_batch(shapes: InfinityShapes, schedule, budget: int, **kw) -> int:
    """The largest batch whose estimated peak fits ``budget`` bytes (0: not even one image)."""
    if estimate(shapes, schedule, batch=1, **kw).peak > budget:
        return 0
    lo, hi = 1, 2
    while estimate(shapes, schedule, batch=hi, **kw).peak <= budget and hi < 1 << 16:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if estimate(shapes, schedule, batch=mid, **kw).peak <= budget else (lo, mid)
    return lo


def report(shapes: InfinityShapes, schedule, batches: Sequence[int] = (1, 2, 4, 8),
           cards_gib: Sequence[int] = (12, 16, 24, 80)) -> dict:
    """What ``var-fast info --model NAME`` prints: parameters, then per weight dtype and T5 option the
    estimated peak for a few numbers of images per pass (1: the default exact mode, whatever --batch-size;
    more: --batched), and the largest number whose peak fits CARD_USABLE of a few card sizes."""
    L, l = schedule_tokens(schedule)
    out = {"model": shapes.name, "parameters": {"transformer": shapes.transformer_parameters,
                                                "vae": shapes.vae_parameters, "t5_encoder": shapes.t5_parameters},
           "schedule": {"scales": len(schedule), "tokens": L, "last_scale": [schedule[-1][1], schedule[-1][2]],
                        "image": [16 * schedule[-1][1], 16 * schedule[-1][2]]},
           "formula": "docs/infinity.md#memory; var_fast/infinity/memory.py", "options": []}
    for dtype in ("bfloat16", "float32"):
        kv, act, decode = per_image_bytes(shapes, schedule, dtype)
        t5_dtype = "float16" if dtype != "float32" else "float32"
        for offload in ("none", "free", "cpu"):
            kw = dict(dtype=dtype, t5_dtype=t5_dtype, t5_offload=offload)
            one = estimate(shapes, schedule, batch=1, **kw)
            out["options"].append({
                "weights": dtype, "t5": f"{t5_dtype}, offload {offload}",
                "weights_gib": round(one.weights / GiB, 2), "t5_weights_on_gpu_gib":
                    round(0 if offload == "cpu" else one.t5_weights / GiB, 2),
                "per_image_gib": {"kv_cache": round(kv / GiB, 2), "activations": round(act / GiB, 2),
                                  "decode": round(decode / GiB, 2)},
                "peak_gib_by_images_per_pass": {str(b): round(estimate(shapes, schedule, batch=b, **kw).peak / GiB, 2) for b in batches},
                "largest_batched_pass": {f"{c} GB card": largest_batch(shapes, schedule, int(c * GiB * CARD_USABLE), **kw)
                                  for c in cards_gib},
            })
    return out


def format_gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


__all__ = ["InfinityShapes", "published_shapes", "estimate", "per_image_bytes", "largest_batch", "report",
           "t5_encoder_parameters", "T5_XL_PARAMETERS"]
