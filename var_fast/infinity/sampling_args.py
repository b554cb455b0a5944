"""Checks of Infinity's sampling arguments, all done before any model work (the CLI runs them before it loads
a model): prompts, cfg and tau (one value or one per scale), top-k / top-p, the CFG insertion layer, the
aspect ratio and the pixel budget.

Defaults are upstream's ``tools/run_infinity.py``: cfg 3 (``--cfg``), tau 1 (``--tau``), cfg_insertion_layer
0 (CFG on the logits), sampling_per_bits 1, seed 0, and gen_one_img's top_k 900 and top_p 0.97. (Upstream's
scripts/infer.sh runs Infinity-2B with cfg 4 and tau 0.5; its notebooks with cfg 3 and tau 0.5 (2B) or 1.0 (8B).)
"""
from __future__ import annotations

import math
from typing import List, Optional, Union

from .schedules import PIXEL_BUDGETS, PUBLISHED_RATIOS, TEMPLATES, VAE_STRIDE, parse_aspect_ratio

CFG, TAU, TOP_K, TOP_P, CFG_INSERTION_LAYER, SAMPLING_PER_BITS = 3.0, 1.0, 900, 0.97, 0, 1
PER_BITS = (1, 2, 4, 8, 16)  # upstream run_infinity.py --sampling_per_bits choices
# ratios beyond the extreme templates (1/3 and 3) by more than this factor are refused, not snapped
RATIO_SLACK = 1.1

Number = Union[int, float]


def per_scale_list(name: str, value, scales: int, *, minimum: float, strict: bool = False) -> List[float]:
    """One number or one per scale -> a list of ``scales`` finite numbers >= minimum (> with strict)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) not in (1, scales):
        raise ValueError(f"{name} must be one number or one per scale ({scales} scales), got {len(values)} values")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or (v <= minimum if strict else v < minimum):
            raise ValueError(f"{name} must be finite numbers {'>' if strict else '>='} {minimum:g}, got {v!r}")
        out.append(float(v))
    return out * scales if len(out) == 1 else out


def check_top_k_top_p(top_k, top_p) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 disables), got {top_k!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 <= top_p <= 1:
        raise ValueError(f"top_p must be in [0, 1] (0 disables), got {top_p!r}")


def check_cfg_insertion_layer(value, depth: Optional[int] = None) -> List[int]:
    """Upstream's cfg_insertion_layer: 0 (CFG on the logits) or -k (on the output of block depth - k)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError("cfg_insertion_layer must be 0 or a negative block index, got an empty list")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v > 0:
            raise ValueError(f"cfg_insertion_layer must be 0 (CFG on the logits) or a negative block index -k "
                             f"(CFG on the output of block depth-k), got {v!r}")
        if depth is not None and v < 0 and depth + v <= 0:
            raise ValueError(f"cfg_insertion_layer {v} is out of range: this model has {depth} blocks "
                             f"(use -1 .. -{depth - 1})")
    return values


def check_sampling_per_bits(value) -> int:
    if value not in PER_BITS or isinstance(value, bool):
        raise ValueError(f"sampling_per_bits must be one of {PER_BITS}, got {value!r}")
    return value


def check_aspect_ratio(aspect_ratio) -> float:
    """height / width (a number, or "W:H"); refused when far beyond the published templates (1/3 .. 3)."""
    r = parse_aspect_ratio(aspect_ratio)
    lo, hi = min(PUBLISHED_RATIOS), max(PUBLISHED_RATIOS)
    if r < lo / RATIO_SLACK or r > hi * RATIO_SLACK:
        raise ValueError(f"aspect ratio {aspect_ratio!r} (height/width {r:.3g}) is out of range: the published "
                         f"templates go from {lo:g} to {hi:g} (height/width); it is snapped to the nearest only "
                         f"within {RATIO_SLACK:g}x of that range")
    return r


def check_pixels(pixels) -> str:
    if pixels not in PIXEL_BUDGETS:
        raise ValueError(f"pixels must be one of {', '.join(PIXEL_BUDGETS)} (upstream's --pn budgets), got {pixels!r}")
    return pixels


def parse_size(text: str):
    """--size WxH -> (height/width, the pixel budget whose 1:1 area is nearest to W*H on a log scale)."""
    try:
        w, h = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, such as 1024x1024 or 1152x864") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"--size {text!r}: width and height must be positive")
    areas = {name: (VAE_STRIDE * TEMPLATES[1.0][n - 1][0]) ** 2 for name, n in PIXEL_BUDGETS.items()}
    budget = min(areas, key=lambda name: abs(math.log(w * h / areas[name])))
    return h / w, budget


def check_batch_size(batch_size) -> Optional[int]:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None (chosen from free memory), got {batch_size!r}")
    return batch_size


def negative_text(negative_prompt) -> Optional[str]:
    """None or "" (upstream's default ''): the model's learned unconditional embedding; else the text."""
    if negative_prompt is None or negative_prompt == "":
        return None
    if not isinstance(negative_prompt, str):
        raise ValueError(f"negative_prompt must be a string or None, got {type(negative_prompt).__name__}")
    return negative_prompt
