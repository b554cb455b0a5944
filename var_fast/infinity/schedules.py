"""Infinity's dynamic-resolution scale schedules (upstream infinity/utils/dynamic_resolution.py at 4c27bbb).

Every aspect-ratio template (height / width) has one list of 13 token grids; a pixel budget takes its
first 7 (0.06M, ~256 px), 10 (0.25M, ~512 px), 12 (0.60M) or 13 (1M, ~1024 px) grids. A requested
ratio is snapped to the nearest template as upstream does (numpy argmin: the first template on a tie).
The transformer sees (1, h, w) per scale; one latent cell is 16 x 16 pixels (the patchify pair: the
transformer's cell covers 2 x 2 VAE cells of 8 px, the same 16 px).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

VAE_STRIDE = 16
# height / width template -> (h, w) of its 13 scales (upstream ratio2hws; the portrait half by symmetry)
_LANDSCAPE_TO_SQUARE = {
    1.000: [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16), (20, 20), (24, 24), (32, 32), (40, 40), (48, 48), (64, 64)],
    1.250: [(1, 1), (2, 2), (3, 3), (5, 4), (10, 8), (15, 12), (20, 16), (25, 20), (30, 24), (35, 28), (45, 36), (55, 44), (70, 56)],
    1.333: [(1, 1), (2, 2), (4, 3), (8, 6), (12, 9), (16, 12), (20, 15), (24, 18), (28, 21), (36, 27), (48, 36), (60, 45), (72, 54)],
    1.500: [(1, 1), (2, 2), (3, 2), (6, 4), (9, 6), (15, 10), (21, 14), (27, 18), (33, 22), (39, 26), (48, 32), (63, 42), (78, 52)],
    1.750: [(1, 1), (2, 2), (3, 3), (7, 4), (11, 6), (14, 8), (21, 12), (28, 16), (35, 20), (42, 24), (56, 32), (70, 40), (84, 48)],
    2.000: [(1, 1), (2, 2), (4, 2), (6, 3), (10, 5), (16, 8), (22, 11), (30, 15), (38, 19), (46, 23), (60, 30), (74, 37), (90, 45)],
    2.500: [(1, 1), (2, 2), (5, 2), (10, 4), (15, 6), (20, 8), (25, 10), (30, 12), (40, 16), (50, 20), (65, 26), (80, 32), (100, 40)],
    3.000: [(1, 1), (2, 2), (6, 2), (9, 3), (15, 5), (21, 7), (27, 9), (36, 12), (45, 15), (54, 18), (72, 24), (90, 30), (111, 37)],
}
PIXEL_BUDGETS: Dict[str, int] = {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}  # budget -> number of scales


def _templates() -> Dict[float, List[Tuple[int, int]]]:
    out: Dict[float, List[Tuple[int, int]]] = {}
    for ratio, hws in _LANDSCAPE_TO_SQUARE.items():   # upstream's insertion order (it breaks argmin ties)
        out[ratio] = hws
        if ratio != 1.0:
            out[int(1 / ratio * 1000) / 1000] = [(w, h) for h, w in hws]
    return out


TEMPLATES = _templates()
PUBLISHED_RATIOS: Tuple[float, ...] = tuple(TEMPLATES)  # height / width, upstream's h_div_w_templates order

Schedule = List[Tuple[int, int, int]]


def parse_aspect_ratio(aspect_ratio: Union[float, int, str]) -> float:
    """height / width. A number is upstream's h_div_w; a string "W:H" is width:height as image tools write
    it ("16:9" is landscape, h_div_w 0.5625) and "1" or "0.75" a number."""
    if isinstance(aspect_ratio, str):
        text = aspect_ratio.strip()
        if ":" in text:
            try:
                w, h = (float(p) for p in text.split(":"))
            except ValueError:
                raise ValueError(f"aspect ratio {aspect_ratio!r}: expected 'W:H' such as '16:9', or height/width as a number") from None
            value = h / w if w > 0 else float("nan")
        else:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"aspect ratio {aspect_ratio!r}: expected 'W:H' such as '16:9', or height/width as a number") from None
    else:
        value = float(aspect_ratio)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"aspect ratio {aspect_ratio!r} must be a positive finite height/width")
    return value


def nearest_template(aspect_ratio: Union[float, int, str]) -> float:
    """The published height/width template upstream picks for a ratio (nearest; the first on a tie)."""
    r = parse_aspect_ratio(aspect_ratio)
    return min(PUBLISHED_RATIOS, key=lambda t: abs(r - t))  # min keeps the first of equal distances, as argmin


def _check_pixels(pixels: str) -> int:
    if pixels not in PIXEL_BUDGETS:
        raise ValueError(f"pixels must be one of {', '.join(PIXEL_BUDGETS)}, got {pixels!r}")
    return PIXEL_BUDGETS[pixels]


def scale_schedule(aspect_ratio: Union[float, int, str] = 1.0, pixels: str = "1M") -> Schedule:
    """The transformer's (1, h, w) per scale for a ratio (snapped to the nearest template) and budget."""
    n = _check_pixels(pixels)
    return [(1, h, w) for h, w in TEMPLATES[nearest_template(aspect_ratio)][:n]]


def image_size(aspect_ratio: Union[float, int, str] = 1.0, pixels: str = "1M") -> Tuple[int, int]:
    """(height, width) in pixels of the images of that schedule."""
    _, h, w = scale_schedule(aspect_ratio, pixels)[-1]
    return h * VAE_STRIDE, w * VAE_STRIDE


def vae_schedule(schedule: Sequence[Tuple[int, int, int]], patchify: bool) -> Schedule:
    """The VAE's grids for a transformer schedule (twice the side with spatial patchify)."""
    return [(t, 2 * h, 2 * w) if patchify else (t, h, w) for t, h, w in schedule]


def full_grid_of(schedule: Sequence[Tuple[int, int, int]]) -> Tuple[int, int]:
    """Last (h, w) of the 1M schedule of the template ``schedule`` is a prefix of (the RoPE2d grid
    normalisation upstream keys by template). ValueError if it is a prefix of none."""
    hw = [(h, w) for _, h, w in schedule]
    if not hw or any(t != 1 for t, _, _ in schedule):
        raise ValueError(f"scale schedule {list(schedule)} must be a non-empty list of (1, h, w)")
    for grids in TEMPLATES.values():
        if grids[:len(hw)] == hw:
            return grids[-1]
    raise ValueError(f"scale schedule {list(schedule)} is not the start of any published template "
                     f"(see var_fast.infinity.schedules.scale_schedule)")
