"""Read the Infinity golden data: upstream FoundationVision/Infinity's own outputs on two small random-weight
models (tests/data/golden_infinity.pt), their weights (tests/data/golden_infinity_weights.pt) and the tiny T5
(tests/data/infinity_tiny_t5/), all made by scripts/make_infinity_golden.py.

golden_infinity.pt: ``{"format": 1, "source": {...}, "notes": str, "cases": [case, ...], "t5_features": [...]}``.
A case (one upstream ``autoregressive_infer_cfg`` call, as tools/run_infinity.py makes it):
  name, model ("tiny" | "tiny_patchify"), covers (what it is for), prompts (B strings), negative_prompt (str or
  None: then, with any cfg != 1, upstream's learned cfg_uncond), B, h_div_w (asked), h_div_w_template, pn,
  scale_schedule [[1, h, w], ...], cfg_list, tau_list, top_k, top_p, cfg_insertion_layer ([0]: CFG on the
  logits, [-k]: at block depth-k's output), sampling_per_bits, g_seed, seed_group / image_index (a B=1 run of
  image ``image_index`` of case ``seed_group`` with g_seed = that image's seed, else None),
  cond / negative: ``{"kv_compact": [sum(lens), 256] float32, "lens", "cu_seqlens_k": int32, "Ltext"}`` as
  upstream's encode_prompt gives them (negative: None, or the negative prompt encoded once per image),
  bits: per scale uint8 [B, 1, h, w, d] (VAE grid: 2h x 2w with patchify), summed_codes: [B, d, H, W] float32
  (vae.decode's input), image_shape, image_sha256 (per image, of upstream's BGR uint8 bytes), image_bgr (uint8
  [B, H, W, 3] BGR as upstream returns it, or None where only the digests are stored).
t5_features: ``[{"prompts", "kv_compact", "lens", "cu_seqlens_k", "Ltext"}, ...]``: encode_prompt of the tiny T5.
vae_encode: ``[{"model", "input_case", "input_index", "scale_schedule" (the VAE grid's), "h", "z", "bits",
"var_input", "recon_shape", "recon_sha256"}, ...]``: upstream's ``vae.encode`` of a stored image (that case's
image_bgr[input_index] flipped to RGB, /255, x + x - 1; see ``vae_input``): encoder output h [1, d, H, W],
z = the summed quantized codes [1, d, H, W], bits per scale uint8 [1, 1, h, w, d], var_input (upstream's
next-scale inputs), and the sha256 of ``vae.decode(z)`` as run_infinity's joint_vi_vae_encode_decode makes it
(((x + 1) / 2 * 255) numpy astype uint8, RGB: no flip there).

golden_infinity_weights.pt: ``{"format": 1, "source": {...}, "models": {name: {"config", "transformer", "vae"}}}``,
state dicts in upstream's exact keys, stored in bfloat16 (every value is bf16-representable; upstream ran them
as float32, which is what the functions here return).
"""
from __future__ import annotations

import functools
import hashlib
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
GOLDEN_PATH = os.path.join(DATA, "golden_infinity.pt")
WEIGHTS_PATH = os.path.join(DATA, "golden_infinity_weights.pt")
T5_DIR = os.path.join(DATA, "infinity_tiny_t5")
FORMAT = 1


@functools.lru_cache(maxsize=None)
def load_golden() -> dict:
    """The whole golden_infinity.pt (cached: treat it as read-only)."""
    return _load(GOLDEN_PATH)


@functools.lru_cache(maxsize=None)
def load_weights() -> dict:
    """The whole golden_infinity_weights.pt, tensors as stored (bfloat16; cached: treat it as read-only)."""
    return _load(WEIGHTS_PATH)


def _load(path: str) -> dict:
    data = torch.load(path, weights_only=True)
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, this reader knows {FORMAT}")
    return data


def cases(model: Optional[str] = None) -> List[dict]:
    """Every golden case (or those of one model), in the file's order."""
    return [c for c in load_golden()["cases"] if model is None or c["model"] == model]


def case(name: str) -> dict:
    for c in load_golden()["cases"]:
        if c["name"] == name:
            return c
    raise KeyError(f"no golden Infinity case {name!r}")


def seed_groups() -> Dict[str, List[dict]]:
    """batch case name -> its B=1 runs (one per image, in image order), for the image_seeds check."""
    groups: Dict[str, List[dict]] = {}
    for c in load_golden()["cases"]:
        if c["seed_group"] is not None:
            groups.setdefault(c["seed_group"], []).append(c)
    return {g: sorted(runs, key=lambda c: c["image_index"]) for g, runs in groups.items()}


def model_names() -> List[str]:
    return sorted(load_weights()["models"])


def model_config(name: str) -> dict:
    """The upstream constructor settings of a golden model (depth, embed_dim, ..., vae_*, flags not in the keys:
    add_lvl_embeding_only_first_block, rope2d_normalized_by_hw, ...)."""
    return dict(load_weights()["models"][name]["config"])


def _float32(sd: dict) -> Dict[str, torch.Tensor]:
    return {k: (v.float() if v.is_floating_point() else v.clone()) for k, v in sd.items()}


def transformer_state_dict(name: str) -> Dict[str, torch.Tensor]:
    """The golden transformer's weights in upstream's keys, float32 (a fresh copy)."""
    return _float32(load_weights()["models"][name]["transformer"])


def vae_state_dict(name: str) -> Dict[str, torch.Tensor]:
    """The golden BSQ VAE's weights in upstream's keys (AutoEncoder.state_dict(); the published VAE .pth files
    hold this dict under the key "vae"), float32 (a fresh copy)."""
    return _float32(load_weights()["models"][name]["vae"])


def text_tuple(record: Optional[dict]) -> Optional[Tuple[torch.Tensor, List[int], torch.Tensor, int]]:
    """A stored cond/negative record as upstream's (kv_compact, lens, cu_seqlens_k, Ltext), or None."""
    if record is None:
        return None
    return record["kv_compact"], list(record["lens"]), record["cu_seqlens_k"], record["Ltext"]


def schedule(c: dict) -> List[Tuple[int, int, int]]:
    return [tuple(s) for s in c["scale_schedule"]]


def images_rgb(c: dict) -> Optional[torch.Tensor]:
    """The stored image of a case as RGB uint8 [B, H, W, 3] (upstream returns BGR), or None if only digests."""
    return None if c["image_bgr"] is None else c["image_bgr"].flip(dims=(3,))


def image_digests(images: torch.Tensor, *, rgb: bool = True) -> List[str]:
    """sha256 of each uint8 [H, W, 3] image's bytes in upstream's BGR order, comparable with a case's
    image_sha256 (``rgb``: the images are RGB, as var_fast returns them)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [B, H, W, 3], got {images.dtype} {list(images.shape)}")
    bgr = images.flip(dims=(3,)) if rgb else images
    return [hashlib.sha256(im.contiguous().cpu().numpy().tobytes()).hexdigest() for im in bgr]


def t5_features() -> List[dict]:
    return load_golden()["t5_features"]


def vae_encode_records() -> List[dict]:
    return load_golden()["vae_encode"]


def vae_input(record: dict) -> torch.Tensor:
    """The float image [1, 3, H, W] in [-1, 1] upstream's vae.encode got for a vae_encode record."""
    rgb = case(record["input_case"])["image_bgr"][record["input_index"]].flip(dims=(2,))
    im = rgb.permute(2, 0, 1).contiguous().to(torch.float32).div(255)  # torchvision to_tensor
    return im.add(im).add_(-1).unsqueeze(0)


def aspect_ratios() -> Sequence[float]:
    return sorted({c["h_div_w_template"] for c in load_golden()["cases"]})


# ---- image bytes across machines ------------------------------------------------------------------------------
# The bits and summed codes are discrete and must match upstream's exactly everywhere. The image bytes are the
# float decoder's output cut to uint8: another CPU's float kernels (another vector width, another GEMM path)
# round a few values to the neighbouring level (an AMD EPYC VM, 2026-12-06: 0.007% of the values, never more
# than 1 level). So an image must equal upstream's bytes on a machine whose decoder reproduces the stored
# images exactly, and elsewhere be within 1 level of a stored image on all but MAX_ROUNDED_SHARE of its values.
MAX_ROUNDED_SHARE = 1e-3


def decoded_stored_images(c: dict) -> torch.Tensor:
    """Our BSQ VAE's uint8 RGB decoding of a case's stored summed codes (what the samplers do)."""
    from var_fast.infinity.loading import bsq_vae_from_state_dict

    vae = bsq_vae_from_state_dict(vae_state_dict(c["model"]), f"golden {c['model']} VAE")
    with torch.no_grad():
        img = (vae.decode(c["summed_codes"]) + 1) / 2
    return img.permute(0, 2, 3, 1).mul_(255).to(torch.uint8)


@functools.lru_cache(maxsize=None)
def decoder_rounds_like_golden() -> bool:
    """Whether this machine's decoder gives upstream's stored image bytes exactly, for every stored image."""
    return all(torch.equal(decoded_stored_images(c), images_rgb(c)) for c in cases() if c["image_bgr"] is not None)


def assert_close_bytes(ours: torch.Tensor, theirs: torch.Tensor, what: str = "image") -> None:
    """uint8 arrays equal but for float rounding: within 1 level, on all but MAX_ROUNDED_SHARE of the values."""
    assert ours.shape == theirs.shape, f"{what}: shape {list(ours.shape)} vs {list(theirs.shape)}"
    diff = (ours.int() - theirs.int()).abs()
    share = (diff > 0).float().mean().item()
    assert diff.max().item() <= 1 and share <= MAX_ROUNDED_SHARE, (
        f"{what}: {share:.4%} of the values differ, by up to {diff.max().item()} levels")


def assert_images_are_upstreams(images: torch.Tensor, c: dict) -> None:
    """uint8 RGB [B, H, W, 3] images against a case: its digests on a machine that rounds like the one that made the
    golden; elsewhere within rounding of its stored image (if it stores one; its bits and summed codes, checked
    exactly by the caller, fix the decoder's input, and the decoder is checked on the stored images)."""
    if image_digests(images) == list(c["image_sha256"]):
        return
    assert not decoder_rounds_like_golden(), (
        f"{c['name']}: the image bytes differ from upstream's on a machine whose decoder reproduces them")
    if c["image_bgr"] is not None:
        assert_close_bytes(images, images_rgb(c), c["name"])
