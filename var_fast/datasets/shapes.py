"""A procedural, class-conditional image set: coloured shapes and patterns on varied backgrounds.

Every image is drawn from a ``torch.Generator``, so a seed fixes the whole set. Each class is a
shape (or a full-image pattern) with a random position, size and rotation, drawn in a jittered
warm yellow on a dark blue background with a gradient in a random direction; the bright shape on
the dark background is visible at a glance. Images are rasterised at twice the
size and box-filtered down (anti-aliased edges) with plain tensor ops: a batch of 64 images of
64x64 takes a few milliseconds.

    images, labels = shapes_batch(64, generator=torch.Generator().manual_seed(0))  # (64,3,64,64) in [0,1]
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

CLASS_NAMES: Tuple[str, ...] = (
    "disk", "ring", "square", "triangle", "cross", "star", "crescent", "heart", "stripes", "checkerboard",
)
NUM_CLASSES = len(CLASS_NAMES)

Tensor = torch.Tensor


# ---- class masks: (x, y) in the shape's own frame (unit ~ the shape's radius) -> inside (bool) ----
def _disk(x: Tensor, y: Tensor) -> Tensor:
    return x * x + y * y < 0.9 ** 2


def _ring(x: Tensor, y: Tensor) -> Tensor:
    r2 = x * x + y * y
    return (r2 < 1.0) & (r2 > 0.55 ** 2)


def _square(x: Tensor, y: Tensor) -> Tensor:
    return torch.maximum(x.abs(), y.abs()) < 0.78


def _triangle(x: Tensor, y: Tensor) -> Tensor:
    # equilateral, circumradius 1.05: inside all three edges at distance 0.525 from the centre
    inside = torch.ones_like(x, dtype=torch.bool)
    for deg in (-90.0, 30.0, 150.0):
        a = math.radians(deg)
        inside &= x * math.cos(a) + y * math.sin(a) < 0.525
    return inside


def _cross(x: Tensor, y: Tensor) -> Tensor:
    ax, ay = x.abs(), y.abs()
    return ((ax < 0.34) & (ay < 0.95)) | ((ay < 0.34) & (ax < 0.95))


def _star(x: Tensor, y: Tensor) -> Tensor:
    # five points, outer radius 1.05, inner radius 0.52: fold the angle into one half sector and
    # test against the edge from the outer to the inner vertex
    sector = 2 * math.pi / 5
    r = torch.sqrt(x * x + y * y)
    phi = torch.atan2(x, y)  # 0 points up
    phi = torch.remainder(phi + sector / 2, sector) - sector / 2
    fx, fy = r * torch.cos(phi), r * torch.sin(phi).abs()
    ox, oy = 1.05, 0.0
    ix, iy = 0.52 * math.cos(sector / 2), 0.52 * math.sin(sector / 2)
    # the origin side of the line outer -> inner
    return (ix - ox) * (fy - oy) - (iy - oy) * (fx - ox) > 0


def _crescent(x: Tensor, y: Tensor) -> Tensor:
    return (x * x + y * y < 0.95 ** 2) & ((x - 0.5) ** 2 + (y + 0.1) ** 2 > 0.78 ** 2)


def _heart(x: Tensor, y: Tensor) -> Tensor:
    # the implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 < 0, centred and scaled to about unit radius
    hx, hy = x * 1.2, -(y * 1.2) + 0.15
    return (hx * hx + hy * hy - 1) ** 3 - hx * hx * hy ** 3 < 0


def _stripes(x: Tensor, y: Tensor) -> Tensor:
    # full-image pattern: the frame's unit here is the stripe period
    return torch.remainder(x, 1.0) < 0.5


def _checkerboard(x: Tensor, y: Tensor) -> Tensor:
    return (torch.floor(x) + torch.floor(y)).remainder(2) < 0.5


_MASKS: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "disk": _disk, "ring": _ring, "square": _square, "triangle": _triangle, "cross": _cross, "star": _star,
    "crescent": _crescent, "heart": _heart, "stripes": _stripes, "checkerboard": _checkerboard,
}
_PATTERNS = {"stripes", "checkerboard"}   # fill the whole image; "size" is the period
_UPRIGHT = {"heart"}                      # recognisable upright only: rotation limited to +-30 degrees


def _uniform(n: int, lo: float, hi: float, g: Optional[torch.Generator]) -> Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """(N,) each in [0,1] -> (N, 3)."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def _colours(n: int, g: Optional[torch.Generator]) -> Tuple[Tensor, Tensor, Tensor]:
    """Foreground, and the two ends of the background gradient, (n, 3) each: a warm yellow shape on
    a dark blue gradient, every colour jittered a little.

    The palette is deliberately narrow: the VQVAE's GroupNorm layers remove every image's per-group
    mean and scale, so a small VQVAE (2 channels per group at full resolution) learns shapes in one
    colour scheme within minutes on a CPU, while arbitrary colours stall it for thousands of steps.
    """
    fg = _hsv_to_rgb(_uniform(n, 0.11, 0.15, g), _uniform(n, 0.7, 0.85, g), _uniform(n, 0.92, 1.0, g))
    h_bg, s_bg, v_bg = _uniform(n, 0.6, 0.65, g), _uniform(n, 0.45, 0.6, g), _uniform(n, 0.18, 0.26, g)
    bg0 = _hsv_to_rgb(h_bg, s_bg, v_bg)
    # second end of the gradient: the same colour, brightness jittered
    bg1 = _hsv_to_rgb(h_bg, s_bg, (v_bg + _uniform(n, -0.06, 0.06, g)).clamp(0, 1))
    return fg, bg0, bg1


def render(labels: Tensor, generator: Optional[torch.Generator] = None, size: int = 64) -> Tensor:
    """Images (B, 3, size, size) in [0, 1] of the classes ``labels`` (B,), drawn from ``generator``."""
    return render_with_params(labels, generator, size)[0]


def render_with_params(labels: Tensor, generator: Optional[torch.Generator] = None, size: int = 64
                       ) -> Tuple[Tensor, Dict[str, Tensor]]:
    """``render``'s images and the per-image parameters it drew (B,) each: centre ``cx``, ``cy``, ``radius``,
    ``period`` (patterns) and the rotation ``angle`` it used (for upright classes already limited); and the
    colours, ``grad_angle`` (B,) and ``fg``, ``bg0``, ``bg1`` (B, 3), so that ``render_from_params`` draws the
    same images again (or, with some changed, the same images with another geometry)."""
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
    _check_labels(labels)
    B, g = labels.numel(), generator
    # every random draw happens for the whole batch, in a fixed order: the set depends on the seed only
    cx, cy = _uniform(B, -0.2, 0.2, g), _uniform(B, -0.2, 0.2, g)
    radius = _uniform(B, 0.6, 0.75, g)
    period = _uniform(B, 0.55, 0.8, g)  # patterns: stripe period / checker cell size (image = 2 units)
    angle = _uniform(B, -math.pi, math.pi, g)
    upright = torch.tensor([CLASS_NAMES[i] in _UPRIGHT for i in labels.tolist()], dtype=torch.bool)
    angle = torch.where(upright, angle / 6, angle)
    grad_angle = _uniform(B, -math.pi, math.pi, g)
    fg, bg0, bg1 = _colours(B, g)
    params = {"cx": cx, "cy": cy, "radius": radius, "period": period, "angle": angle,
              "grad_angle": grad_angle, "fg": fg, "bg0": bg0, "bg1": bg1}
    return render_from_params(labels, params, size), params


def render_from_params(labels: Tensor, params: Dict[str, Tensor], size: int = 64) -> Tensor:
    """Images (B, 3, size, size) in [0, 1] of the classes ``labels`` (B,) drawn with ``params`` as
    ``render_with_params`` returns them (no randomness here)."""
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
    _check_labels(labels)
    B, ss = labels.numel(), 2 * size
    cx, cy, radius, period, angle = (params[k].reshape(B).float() for k in ("cx", "cy", "radius", "period", "angle"))
    grad_angle = params["grad_angle"].reshape(B).float()
    fg, bg0, bg1 = (params[k].reshape(B, 3).float() for k in ("fg", "bg0", "bg1"))
    is_pattern = torch.tensor([CLASS_NAMES[i] in _PATTERNS for i in labels.tolist()], dtype=torch.bool)
    # into the shape's frame: translate (shapes only), rotate by -angle, scale by 1/radius (or 1/period)
    ox = torch.where(is_pattern, cx * period, cx)[:, None, None]  # patterns: cx shifts the phase
    oy = torch.where(is_pattern, cy * period, cy)[:, None, None]
    unit = torch.where(is_pattern, period, radius)[:, None, None]
    c, s = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    # coverage of every pixel: the mask at twice the resolution, box-filtered down
    fine = _pixel_centres(ss)
    dx, dy = fine[None, None, :] - ox, fine[None, :, None] - oy
    fx, fy = (c * dx + s * dy) / unit, (-s * dx + c * dy) / unit
    mask = torch.zeros(B, ss, ss)
    for k, name in enumerate(CLASS_NAMES):
        sel = (labels == k).nonzero().flatten()
        if sel.numel():
            mask[sel] = _MASKS[name](fx[sel], fy[sel]).float()
    alpha = F.avg_pool2d(mask[:, None], 2)

    px = _pixel_centres(size)
    t = (torch.cos(grad_angle)[:, None, None] * px[None, None, :]
         + torch.sin(grad_angle)[:, None, None] * px[None, :, None]) * 0.5 + 0.5
    bg = bg0[:, :, None, None] + (bg1 - bg0)[:, :, None, None] * t[:, None]
    return (bg + (fg[:, :, None, None] - bg) * alpha).clamp_(0, 1)


def _check_labels(labels: Tensor) -> None:
    if labels.numel() and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labels must lie in [0, {NUM_CLASSES}), got {labels.min().item()}..{labels.max().item()}")


def _pixel_centres(n: int) -> Tensor:
    """Pixel centres of an n-pixel row in [-1, 1]."""
    return (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1


def shapes_batch(batch_size: int, generator: Optional[torch.Generator] = None, size: int = 64,
                 classes: Optional[Sequence[int]] = None) -> Tuple[Tensor, Tensor]:
    """(images (B, 3, size, size) in [0, 1], labels (B,)) with uniformly random classes
    (from ``classes`` when given)."""
    images, labels, _ = shapes_batch_with_params(batch_size, generator, size, classes)
    return images, labels


def shapes_batch_with_params(batch_size: int, generator: Optional[torch.Generator] = None, size: int = 64,
                             classes: Optional[Sequence[int]] = None) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
    """``shapes_batch``'s images and labels (the same for the same generator state) and the parameters they
    were drawn with, as ``render_with_params`` returns them."""
    pool = torch.as_tensor(list(classes) if classes is not None else range(NUM_CLASSES), dtype=torch.long)
    labels = pool[torch.randint(len(pool), (batch_size,), generator=generator)]
    images, params = render_with_params(labels, generator, size)
    return images, labels, params


def balanced_labels(per_class: int, num_classes: int = NUM_CLASSES) -> Tensor:
    """0,..,0, 1,..,1, ...: ``per_class`` labels of every class."""
    return torch.arange(num_classes).repeat_interleave(per_class)


def image_grid(images: Tensor, nrow: int, pad: int = 2) -> Tensor:
    """(N, 3, H, W) in [0, 1] -> one (3, H', W') image with ``nrow`` images per row."""
    N, C, H, W = images.shape
    rows = (N + nrow - 1) // nrow
    grid = torch.ones(C, rows * (H + pad) + pad, nrow * (W + pad) + pad)
    for i in range(N):
        r, c = divmod(i, nrow)
        grid[:, pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = images[i]
    return grid


def save_png(image_CHW: Tensor, path: str) -> None:
    """Write a (3, H, W) image in [0, 1] as a PNG (needs pillow)."""
    from PIL import Image

    arr = image_CHW.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path)
