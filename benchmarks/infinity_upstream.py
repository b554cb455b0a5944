"""Run FoundationVision/Infinity's own inference code from a checkout, on the CPU in float32, without flash-attn.

Used by scripts/make_infinity_golden.py (the golden test cases) and benchmarks/bench_infinity_reference.py
(upstream vs var_fast timings), so that both run upstream the same way. Upstream's code is imported from
the checkout, never copied; only these imports are replaced, and only while upstream's modules are imported
(the stand-ins are taken out of ``sys.modules`` again afterwards, so other code in the process is unaffected):

- ``flash_attn`` (CUDA-only; upstream's ``infinity/models/basic.py`` imports it unconditionally). Upstream's
  inference path calls only ``flash_attn_varlen_kvpacked_func``, from ``CrossAttention`` (text pool and every
  block's cross-attention), after casting q and kv to bfloat16 itself (``q_compact.to(dtype=torch.bfloat16)``).
  The stand-in computes what flash-attn computes: for each sequence i of the packed batch (``cu_seqlens_q``,
  ``cu_seqlens_k``), softmax(softmax_scale * q_i k_i^T) v_i over that sequence's keys only, no mask inside a
  sequence (upstream passes causal=False, dropout_p=0), with the bf16 inputs upcast to float32 and the result
  returned in the input dtype (bf16), as flash-attn returns it. It runs
  ``F.scaled_dot_product_attention`` on the float32 [1, H, L, c] tensors of each sequence. flash-attn's own
  kernel also accumulates in float32 but in its own order (and rounds P to bf16 before P.V), so on a GPU its
  last float32 bits may differ; the bf16 rounding of the inputs and of the output is upstream's and is kept.
  ``flash_attn_func`` (only reached with upstream's customized_flash_attn=True, which inference never sets)
  gets the same treatment. The ``flash_attn.ops`` fused kernels are made absent, so upstream takes its own
  PyTorch fallbacks (``flash_fused_op_installed = False``, ``rms_norm_impl`` in plain PyTorch), as on any
  machine without them.
- ``infinity.models.fused_op``: its functions are ``@torch.compile(fullgraph=True)``; upstream's own Python
  functions are used uncompiled (``fn._torchdynamo_orig_callable``), so the math is upstream's source line for
  line, evaluated eagerly (Inductor may fuse and round differently). They must stay non-None: upstream's
  ``CrossAttnBlock`` passes ``scale_ind`` to self-attention (RoPE offsets of later scales) only on that path,
  which is the path every published run takes (``fused_norm=True``).
- ``timm`` (``register_model``, ``DropPath``, ``SoftTargetCrossEntropy``): a registry decorator that returns the
  function, DropPath that is the identity in eval mode (upstream's models run in eval; it refuses to train),
  and a loss class that is never used at inference. ``imageio`` and ``torchvision`` (imported, not used by
  the VAE's decoder) are stubbed only when not installed, and so is ``pytz`` (upstream's log timestamps only;
  the stand-in's ``timezone`` raises if anything calls it): gpu-check's GPU machine has no pytz.

Differences from ``tools/run_infinity.py`` that do not change a number on the CPU:
- ``encode_prompt`` here is upstream's without ``.cuda()``; the T5 runs in float32 on the CPU (upstream loads
  it in float16 on the GPU).
- Upstream wraps the sampling in ``torch.cuda.amp.autocast(bfloat16)``; CUDA autocast does not touch CPU
  ops, so it is left out.
- The VAE is built by upstream's ``vae_model`` with the knobs of ``load_visual_tokenizer`` (``schedule_mode``
  "dynamic", patch size 16 or 8 with patchify, test_mode); only ``base_ch`` and ``num_res_blocks`` (fixed
  at 128 and 2 inside ``vae_model``) are made small, and the channel multipliers are passed (``vae_model``
  takes them as arguments).
- The transformer is built with ``load_infinity``'s constructor arguments and loaded with upstream's own
  ``Infinity.load_state_dict``; its ``rng`` is a CPU ``torch.Generator`` (upstream: ``torch.Generator(device)``,
  a CUDA generator on a GPU, whose stream differs from the CPU one).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import math
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

UPSTREAM_REPO = "FoundationVision/Infinity"
UPSTREAM_COMMIT = "4c27bbb"  # the checkout the golden data was made from


# ----------------------------------------------------------------------------------------------------------
# stand-ins for the imports upstream cannot do on a CPU-only machine


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                                    softmax_scale=None, causal=False, **unused):
    """flash_attn's varlen kv-packed attention: q [total_q, H, c], kv [total_k, 2, H, c] -> [total_q, H, c]."""
    if dropout_p != 0.0 or causal or unused:
        raise NotImplementedError("stand-in flash_attn_varlen_kvpacked_func: only dropout_p=0, causal=False")
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    out = torch.empty_like(q)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    if len(cq) != len(ck):
        raise ValueError(f"cu_seqlens_q has {len(cq)} entries, cu_seqlens_k {len(ck)}")
    for i in range(len(cq) - 1):
        qi = q[cq[i]:cq[i + 1]].float().transpose(0, 1).unsqueeze(0)        # 1 H Lq c
        ki = kv[ck[i]:ck[i + 1], 0].float().transpose(0, 1).unsqueeze(0)    # 1 H Lk c
        vi = kv[ck[i]:ck[i + 1], 1].float().transpose(0, 1).unsqueeze(0)
        oi = F.scaled_dot_product_attention(qi, ki, vi, scale=scale)
        out[cq[i]:cq[i + 1]] = oi[0].transpose(0, 1).to(q.dtype)
    return out


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **unused):
    """flash_attn's dense attention: q, k, v [B, L, H, c] -> [B, L, H, c] (upstream inference never calls it)."""
    if dropout_p != 0.0 or causal or unused:
        raise NotImplementedError("stand-in flash_attn_func: only dropout_p=0, causal=False")
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    o = F.scaled_dot_product_attention(q.float().transpose(1, 2), k.float().transpose(1, 2),
                                       v.float().transpose(1, 2), scale=scale)
    return o.transpose(1, 2).to(q.dtype)


class _DropPath(torch.nn.Module):
    def __init__(self, drop_prob: float = 0.0, *args, **kwargs):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.training and self.drop_prob > 0:
            raise RuntimeError("stand-in DropPath: inference only (call .eval())")
        return x


def _drop_path(x, drop_prob: float = 0.0, training: bool = False, *args, **kwargs):
    if training and drop_prob > 0:
        raise RuntimeError("stand-in drop_path: inference only")
    return x


class _SoftTargetCrossEntropy(torch.nn.Module):
    def forward(self, *args, **kwargs):
        raise RuntimeError("stand-in timm SoftTargetCrossEntropy: training only")


def _no_timezone(*args, **kwargs):
    raise RuntimeError("stand-in pytz (benchmarks/infinity_upstream.py): upstream's log timestamps are not supported")


def _module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    m.__file__ = f"<stand-in {name}: benchmarks/infinity_upstream.py>"
    return m


def _stand_ins() -> Dict[str, types.ModuleType]:
    mods = {
        # a plain module (no __path__), so `from flash_attn.ops... import` fails with ImportError as upstream expects
        "flash_attn": _module("flash_attn", flash_attn_func=flash_attn_func,
                              flash_attn_varlen_kvpacked_func=flash_attn_varlen_kvpacked_func),
        "timm": _module("timm"),
        "timm.models": _module("timm.models", register_model=lambda fn: fn),
        "timm.models.layers": _module("timm.models.layers", DropPath=_DropPath, drop_path=_drop_path),
        "timm.loss": _module("timm.loss", SoftTargetCrossEntropy=_SoftTargetCrossEntropy),
    }
    mods["timm"].models, mods["timm"].loss = mods["timm.models"], mods["timm.loss"]
    mods["timm.models"].layers = mods["timm.models.layers"]
    for name in ("imageio", "torchvision"):
        if importlib.util.find_spec(name) is None:
            mods[name] = _module(name)
    if importlib.util.find_spec("pytz") is None:
        mods["pytz"] = _module("pytz", timezone=_no_timezone)
    if "torchvision" in mods:
        mods["torchvision.transforms"] = _module("torchvision.transforms")
        mods["torchvision"].transforms = mods["torchvision.transforms"]
    return mods


@dataclass
class Upstream:
    """Upstream's modules, imported from a checkout."""
    checkout: str
    infinity: types.ModuleType           # infinity.models.infinity
    basic: types.ModuleType              # infinity.models.basic
    vae: types.ModuleType                # infinity.models.bsq_vae.vae
    dynamic_resolution: types.ModuleType  # infinity.utils.dynamic_resolution


_IMPORTED: Dict[str, Upstream] = {}


def import_upstream(checkout: str) -> Upstream:
    """Import upstream Infinity's inference modules from ``checkout`` (a FoundationVision/Infinity work tree)."""
    checkout = os.path.abspath(checkout)
    if checkout in _IMPORTED:
        return _IMPORTED[checkout]
    if not os.path.isfile(os.path.join(checkout, "infinity", "models", "infinity.py")):
        raise FileNotFoundError(f"{checkout} is not a FoundationVision/Infinity checkout "
                                "(no infinity/models/infinity.py)")
    if _IMPORTED:
        raise RuntimeError(f"upstream Infinity already imported from {next(iter(_IMPORTED))}; one checkout per process")
    for missing in ("einops", "numpy", "tqdm"):
        if importlib.util.find_spec(missing) is None:
            raise ImportError(f"upstream Infinity needs `{missing}` (pip install {missing})")
    stand_ins = _stand_ins()
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    sys.path.insert(0, checkout)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            fused_op = importlib.import_module("infinity.models.fused_op")
            infinity = importlib.import_module("infinity.models.infinity")
            basic = importlib.import_module("infinity.models.basic")
            vae = importlib.import_module("infinity.models.bsq_vae.vae")
            dynamic_resolution = importlib.import_module("infinity.utils.dynamic_resolution")
    finally:
        sys.path.remove(checkout)
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    for fn_name in ("fused_rms_norm", "fused_ada_layer_norm", "fused_ada_rms_norm"):
        eager = getattr(getattr(fused_op, fn_name), "_torchdynamo_orig_callable")
        setattr(fused_op, fn_name, eager)
        if hasattr(infinity, fn_name):
            setattr(infinity, fn_name, eager)
    if basic.flash_fused_op_installed:
        raise RuntimeError("upstream found flash_attn's fused ops; expected its PyTorch fallbacks")
    up = Upstream(checkout, infinity, basic, vae, dynamic_resolution)
    _IMPORTED[checkout] = up
    return up


# ----------------------------------------------------------------------------------------------------------
# small models with upstream's classes


@dataclass(frozen=True)
class ModelSpec:
    """A small Infinity transformer + its BSQ VAE, in upstream's classes (flags as the published models use)."""
    name: str
    depth: int
    embed_dim: int
    num_heads: int
    block_chunks: int
    codebook_dim: int                 # d: bits per VAE token (vae_type in upstream's scripts)
    apply_spatial_patchify: int       # 1: the transformer sees 2x2 VAE tokens as one (4d bits)
    vae_base_ch: int
    vae_ch_mult: Sequence[int]
    vae_num_res_blocks: int
    seed: int
    text_channels: int = 256          # the tiny T5's d_model
    mlp_ratio: float = 4.0
    text_maxlen: int = 512            # load_infinity's
    drop_path_rate: float = 0.1       # run_infinity's model kwargs (identity in eval)
    pn: str = "0.06M"
    add_lvl_embeding_only_first_block: int = 1  # published 2B / 8B settings (scripts/eval.sh, notebooks)
    use_bit_label: int = 1
    rope2d_each_sa_layer: int = 1
    rope2d_normalized_by_hw: int = 2
    use_scale_schedule_embedding: int = 0

    @property
    def vae_patch_size(self) -> int:
        return 8 if self.apply_spatial_patchify else 16  # load_visual_tokenizer

    def config(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["vae_ch_mult"] = list(self.vae_ch_mult)
        d["vae_patch_size"] = self.vae_patch_size
        return d


GOLDEN_MODELS = {
    # like Infinity-2B (no patchify, several blocks per chunk), small: 4 blocks in 2 chunks, d = 8 bits
    "tiny": ModelSpec("tiny", depth=4, embed_dim=64, num_heads=2, block_chunks=2, codebook_dim=8,
                      apply_spatial_patchify=0, vae_base_ch=32, vae_ch_mult=(1, 1, 1, 1, 1), vae_num_res_blocks=1,
                      seed=1),
    # like Infinity-8B (spatial patchify: the transformer sees 4d = 24 bits per token), 2 blocks in 2 chunks; its
    # VAE has 24 channels (GroupNorm of 24 groups, the tiny one 32) and changes width (48 at the deepest level)
    "tiny_patchify": ModelSpec("tiny_patchify", depth=2, embed_dim=48, num_heads=2, block_chunks=2, codebook_dim=6,
                               apply_spatial_patchify=1, vae_base_ch=24, vae_ch_mult=(1, 1, 1, 2),
                               vae_num_res_blocks=1, seed=2),
}
# a wider one for timings only (not in the golden data)
BENCH_MODELS = dict(GOLDEN_MODELS, small=ModelSpec(
    "small", depth=8, embed_dim=256, num_heads=4, block_chunks=4, codebook_dim=16, apply_spatial_patchify=0,
    vae_base_ch=32, vae_ch_mult=(1, 1, 1, 1, 1), vae_num_res_blocks=1, seed=3))


def _randomize_(module: torch.nn.Module, seed: int, noise: float = 0.1) -> None:
    """Default init (already done under torch.manual_seed) plus N(0, noise) on every vector parameter and on
    the attention temperatures, so zero biases, unit norm gains and log(4) scales are not trivial."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.ndim <= 1 or "scale_mul" in name:
                p.add_(torch.randn(p.shape, generator=g) * noise)


def _liven_infinity_(model) -> None:
    """With default init the residual stream carries almost no position information (the 1x1 first scale makes
    the next scale's input constant, and so on), so greedy bits repeat over the whole image. Sharper
    self-attention (temperatures around upstream's clamp, log 100: about half the heads above it, so the clamp
    matters), larger level embeddings and qkv weights, and a smaller head bias make greedy bits vary over
    positions and prompts."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "scale_mul" in name:
                p.add_(math.log(100.0) - math.log(4.0))
            elif name == "lvl_embed.weight":
                p.mul_(10.0)
            elif name.endswith("sa.mat_qkv.weight"):
                p.mul_(3.0)
            elif name == "head.bias":
                p.mul_(0.1)


def _round_to_bf16_(module: torch.nn.Module) -> None:
    """Every float parameter becomes a bfloat16 value (kept in float32): the golden file stores the weights in
    bfloat16, half the size, and they load back to exactly the float32 numbers upstream ran with."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.bfloat16().float())


def build_vae(up: Upstream, spec: ModelSpec, state_dict: Optional[dict] = None):
    """Upstream's BSQ VAE (``vae_model`` as ``load_visual_tokenizer`` calls it) with small widths. Without a
    state dict it is randomly initialised from ``spec.seed``."""
    real = up.vae.AutoEncoder

    def small_autoencoder(args):
        args.base_ch, args.num_res_blocks = spec.vae_base_ch, spec.vae_num_res_blocks
        return real(args)

    torch.manual_seed(spec.seed)
    up.vae.AutoEncoder = small_autoencoder
    try:
        vae = up.vae.vae_model(None, "dynamic", spec.codebook_dim, 2 ** spec.codebook_dim,
                               patch_size=spec.vae_patch_size, encoder_ch_mult=list(spec.vae_ch_mult),
                               decoder_ch_mult=list(spec.vae_ch_mult), test_mode=True)
    finally:
        up.vae.AutoEncoder = real
    if state_dict is None:
        _randomize_(vae, spec.seed)
        _round_to_bf16_(vae)
    else:
        vae.load_state_dict(state_dict, strict=True)
    return vae.eval()


def build_infinity(up: Upstream, spec: ModelSpec, vae, state_dict: Optional[dict] = None, assign: bool = False):
    """Upstream's Infinity with ``load_infinity``'s constructor arguments; weights loaded with upstream's own
    ``load_state_dict`` (it pads/cuts cfg_uncond and is non-strict: missing/unexpected keys are refused here).
    ``assign``: the model holds the state dict's tensors themselves (no copy; gpu-check shares one set of
    weights between var_fast's model and upstream's)."""
    torch.manual_seed(spec.seed)
    with contextlib.redirect_stdout(io.StringIO()):
        model = up.infinity.Infinity(
            vae_local=vae, text_channels=spec.text_channels, text_maxlen=spec.text_maxlen,
            shared_aln=True, raw_scale_schedule=None, checkpointing="full-block", customized_flash_attn=False,
            fused_norm=True, pad_to_multiplier=128, use_flex_attn=False,
            add_lvl_embeding_only_first_block=spec.add_lvl_embeding_only_first_block,
            use_bit_label=spec.use_bit_label, rope2d_each_sa_layer=spec.rope2d_each_sa_layer,
            rope2d_normalized_by_hw=spec.rope2d_normalized_by_hw, pn=spec.pn,
            apply_spatial_patchify=spec.apply_spatial_patchify, inference_mode=True, train_h_div_w_list=[1.0],
            depth=spec.depth, embed_dim=spec.embed_dim, num_heads=spec.num_heads,
            drop_path_rate=spec.drop_path_rate, mlp_ratio=spec.mlp_ratio, block_chunks=spec.block_chunks,
        )
    if state_dict is None:
        _randomize_(model, spec.seed)
        _liven_infinity_(model)
        _round_to_bf16_(model)
    else:
        result = model.load_state_dict(dict(state_dict), assign=assign)
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(f"{spec.name}: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    model.eval().requires_grad_(False)
    model.rng = torch.Generator(device="cpu")
    return model


# ----------------------------------------------------------------------------------------------------------
# text and sampling, as tools/run_infinity.py does them


def load_t5(path: str):
    """The tokenizer and encoder as run_infinity's load_tokenizer loads them, in float32 on the CPU."""
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(path, revision=None, legacy=True)
    tokenizer.model_max_length = 512
    encoder = T5EncoderModel.from_pretrained(path, dtype=torch.float32).eval().requires_grad_(False)
    return tokenizer, encoder


@torch.no_grad()
def encode_prompt(tokenizer, encoder, prompts: List[str]):
    """run_infinity.encode_prompt for a list of captions, without .cuda(): (kv_compact, lens, cu_seqlens_k, Ltext)."""
    tokens = tokenizer(text=list(prompts), max_length=512, padding="max_length", truncation=True, return_tensors="pt")
    input_ids, mask = tokens.input_ids, tokens.attention_mask
    text_features = encoder(input_ids=input_ids, attention_mask=mask)["last_hidden_state"].float()
    lens: List[int] = mask.sum(dim=-1).tolist()
    cu_seqlens_k = F.pad(mask.sum(dim=-1).to(dtype=torch.int32).cumsum_(0), (1, 0))
    kv_compact = torch.cat([feat[:n] for n, feat in zip(lens, text_features.unbind(0))], dim=0)
    return kv_compact, lens, cu_seqlens_k, max(lens)


def scale_schedule(up: Upstream, h_div_w: float, pn: str):
    """run_infinity's schedule: the template nearest to h_div_w, t set to 1."""
    import numpy as np

    templates = up.dynamic_resolution.h_div_w_templates
    template = float(templates[np.argmin(np.abs(templates - h_div_w))])
    scales = up.dynamic_resolution.dynamic_resolution_h_w[template][pn]["scales"]
    return template, [(1, h, w) for (_, h, w) in scales]


@dataclass
class UpstreamRun:
    bits: List[torch.Tensor] = field(default_factory=list)   # per scale: [B, 1, h, w, d] (after unpatchify)
    summed_codes: Optional[torch.Tensor] = None               # [B, d, H, W]: what vae.decode received
    image_bgr: Optional[torch.Tensor] = None                  # uint8 [B, H, W, 3], upstream's (BGR) channel order


@torch.no_grad()
def run_autoregressive(model, vae, text_cond, *, scale_schedule, cfg_list, tau_list, top_k, top_p,
                       cfg_insertion_layer, g_seed, negative=None, sampling_per_bits=1, B=1,
                       ret_img: bool = True) -> UpstreamRun:
    """``Infinity.autoregressive_infer_cfg`` with the arguments run_infinity's gen_one_img passes (B prompts in
    one call). The bits of every scale and the summed codes are recorded from upstream's own calls of
    ``vae.quantizer.lfq.indices_to_codes`` and ``vae.decode``; nothing in the loop is changed. ``ret_img=False``:
    upstream's loop without decoding (no summed codes or image recorded)."""
    run = UpstreamRun()
    lfq = vae.quantizer.lfq
    real_codes, real_decode = lfq.indices_to_codes, vae.decode

    def indices_to_codes(indices, label_type="int_label", project_out=True):
        run.bits.append(indices.clone())
        return real_codes(indices, label_type, project_out)

    def decode(z):
        run.summed_codes = z.clone()
        return real_decode(z)

    lfq.indices_to_codes, vae.decode = indices_to_codes, decode
    try:
        _, _, img = model.autoregressive_infer_cfg(
            vae=vae, scale_schedule=scale_schedule, label_B_or_BLT=text_cond, g_seed=g_seed,
            B=B, negative_label_B_or_BLT=negative, force_gt_Bhw=None,
            cfg_sc=3, cfg_list=list(cfg_list), tau_list=list(tau_list), top_k=top_k, top_p=top_p,
            returns_vemb=1, ratio_Bl1=None, gumbel=0, norm_cfg=False,
            cfg_exp_k=0.0, cfg_insertion_layer=list(cfg_insertion_layer),
            vae_type=vae.codebook_dim, softmax_merge_topk=-1,
            ret_img=ret_img, trunk_scale=1000,
            gt_leak=0, gt_ls_Bl=None, inference_mode=True,
            sampling_per_bits=sampling_per_bits,
        )
    finally:
        del lfq.indices_to_codes, vae.decode  # back to the class methods
    assert lfq.indices_to_codes.__func__ is type(lfq).indices_to_codes and vae.decode.__func__ is type(vae).decode
    run.image_bgr = img if ret_img else None
    return run


@torch.no_grad()
def run_vae_encode(vae, image_rgb: torch.Tensor, vae_schedule) -> dict:
    """What tools/run_infinity.py's joint_vi_vae_encode_decode does with an image already at the target size:
    upstream's transform (to_tensor, then x + x - 1), ``vae.encode(inp, scale_schedule=...)`` and
    ``vae.decode(z)``, the reconstruction as ((x + 1) / 2 * 255) uint8 RGB (numpy astype, no flip).
    image_rgb: uint8 [H, W, 3]. vae_schedule: the VAE grid's (1, h, w) per scale."""
    if image_rgb.dtype != torch.uint8 or image_rgb.ndim != 3 or image_rgb.shape[-1] != 3:
        raise ValueError(f"image_rgb must be uint8 [H, W, 3], got {image_rgb.dtype} {list(image_rgb.shape)}")
    im = image_rgb.permute(2, 0, 1).contiguous().to(torch.float32).div(255)  # torchvision to_tensor
    inp = im.add(im).add_(-1).unsqueeze(0)
    h, z, _, all_bit_indices, _, var_input = vae.encode(inp, scale_schedule=[tuple(s) for s in vae_schedule])
    recon = vae.decode(z)[0]
    if recon.ndim == 4:
        recon = recon.squeeze(1)
    recon = (recon + 1) / 2
    recon_rgb = torch.from_numpy(recon.permute(1, 2, 0).mul_(255).cpu().numpy().astype("uint8"))
    return dict(h=h.clone(), z=z.clone(), bits=[b.clone() for b in all_bit_indices],
                var_input=[v.clone() for v in var_input], recon_rgb=recon_rgb)
