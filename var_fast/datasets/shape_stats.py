"""Image statistics that compare a generator's samples with the procedural shapes set.

Two checks that a classifier does not make (it accepts a blob with bumps as a star):

* ``edge_orientation_concentration``: are the edges straight, in the directions the shape has? On
  the brightness (HSV value, max over RGB) take the Sobel gradient; edge pixels are those with at
  least 25% of the image's strongest gradient energy, weighted by that energy. With theta the
  gradient direction, R_n = |sum w exp(i n theta)| / sum w, n the rotational symmetry of the class's
  edge normals (``EDGE_SYMMETRY``: 4 for square, cross, checkerboard; 3 triangle; 5 star;
  2 stripes). A rendered square gives R_4 ~0.9 (blurring it barely changes that), a disk ~0.1; a
  square with rounded corners and wavy edges falls in between. Compare per class with the shapes set.
* ``colour_features`` + ``frechet_distance``: per image the mean RGB of the foreground and of the
  background (pixels clearly above / below the midpoint of the image's brightness range) and the
  background's gradient (the brightness change across the image of a plane fitted to the background),
  7 numbers; the distance of two sets is the Frechet distance of Gaussians fitted to them, after
  standardising every feature by the reference set's standard deviation (unitless; 0 = same).
* ``orientation_agreement``: are the shapes turned every way, as rendered? How alike the images' edge
  orientations (the direction of the sum above) are within a class: 0 spread, 1 all the same.
* ``foreground_texture``: is a shape drawn in one flat colour, as rendered? The brightness's standard
  deviation inside the foreground, a few pixels in from its edges.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor

EDGE_REL_THRESHOLD = 0.25
# the rotational symmetry of each straight-edged class's edge normals (shapes.CLASS_NAMES order)
EDGE_SYMMETRY = {"square": 4, "triangle": 3, "cross": 4, "star": 5, "stripes": 2, "checkerboard": 4}
COLOUR_FEATURE_NAMES = ("fg_r", "fg_g", "fg_b", "bg_r", "bg_g", "bg_b", "bg_gradient")


def _brightness(images: Tensor) -> Tensor:
    return images.float().amax(dim=1, keepdim=True)  # (B, 1, H, W): the HSV value


def _gaussian_kernel(sigma: float) -> Tensor:
    r = int(math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    return k / k.sum()


def _blur(x: Tensor, sigma: float) -> Tensor:
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def _edge_moment(images: Tensor, order: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(B, 3, H, W), (B,) -> the real and imaginary parts of sum w exp(i n theta) over the edge pixels, and
    sum w (each (B,))."""
    v = F.pad(_brightness(images), (1, 1, 1, 1), mode="replicate")
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    gx = F.conv2d(v, sobel_x)
    gy = F.conv2d(v, sobel_x.transpose(2, 3))
    energy = gx * gx + gy * gy
    w = energy * (energy >= EDGE_REL_THRESHOLD * energy.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12))
    n_theta = order.to(images.device).float()[:, None, None, None] * torch.atan2(gy, gx)
    c = (w * torch.cos(n_theta)).sum(dim=(1, 2, 3))
    s = (w * torch.sin(n_theta)).sum(dim=(1, 2, 3))
    return c, s, w.sum(dim=(1, 2, 3))


def edge_orientation_concentration(images: Tensor, order: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1], (B,) symmetry orders -> (B,) R_n in [0, 1] (see the module docstring)."""
    c, s, total = _edge_moment(images, order)
    return torch.sqrt(c * c + s * s) / total.clamp_min(1e-12)


def orientation_agreement(images: Tensor, order: Tensor) -> float:
    """How alike the images' orientations are: each image's edge orientation (the direction of its
    sum w exp(i n theta), defined up to the shape's n-fold symmetry), and the length of the mean of their unit
    vectors: 0 when they point every way, 1 when every image is turned the same way. One class at a time
    (``order`` the same for all); renders of a rotated class give about 1 / sqrt(B), a sampler that draws
    every cross upright about 1."""
    c, s, _ = _edge_moment(images, order)
    angle = torch.atan2(s, c)
    return math.hypot(torch.cos(angle).mean().item(), torch.sin(angle).mean().item())


def foreground_background(images: Tensor) -> Tuple[Tensor, Tensor]:
    """(B, 3, H, W) -> two (B, 1, H, W) float masks: the pixels whose brightness (the channels' max) is above
    the 75% / below the 25% point between the image's 5% and 95% brightness quantiles. Any increasing affine
    map of the pixel values ([0, 1] or [-1, 1]) gives the same masks."""
    v = _brightness(images)
    lo = torch.quantile(v.flatten(1), 0.05, dim=1)[:, None, None, None]
    hi = torch.quantile(v.flatten(1), 0.95, dim=1)[:, None, None, None]
    return (v > lo + 0.75 * (hi - lo)).float(), (v < lo + 0.25 * (hi - lo)).float()


def eroded(mask: Tensor, radius: int) -> Tensor:
    """(B, 1, H, W) 0/1 mask -> the pixels whose whole (2 radius + 1)^2 neighbourhood, as far as it lies inside
    the image, is in it (the image's border does not erode a mask that reaches it)."""
    return -F.max_pool2d(-mask, 2 * radius + 1, stride=1, padding=radius)


def foreground_texture(images: Tensor, radius: int = 2, min_pixels: int = 20) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> (B,): the standard deviation of the brightness inside the foreground
    (``foreground_background``) eroded by ``radius`` pixels, away from its edges. A render's shape is one flat
    colour (0 up to rounding); blotches inside a drawn shape raise it. NaN where fewer than ``min_pixels``
    remain (a thin shape): leave those out of a mean."""
    v = _brightness(images)
    inner = eroded(foreground_background(images)[0], radius) > 0.5
    out = torch.full((images.shape[0],), float("nan"))
    for i in range(images.shape[0]):
        values = v[i][inner[i]]
        if values.numel() >= min_pixels:
            out[i] = values.std()
    return out


def colour_features(images: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 7): foreground mean RGB, background mean RGB, background gradient."""
    images = images.float()
    B, _, H, W = images.shape
    fg, bg = foreground_background(images)
    fg_rgb = (images * fg).sum(dim=(2, 3)) / fg.sum(dim=(2, 3)).clamp_min(1)
    bg_rgb = (images * bg).sum(dim=(2, 3)) / bg.sum(dim=(2, 3)).clamp_min(1)
    # least-squares plane a + b x + c y through the background's brightness, x and y in [-1, 1]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    basis = torch.stack([torch.ones_like(xs), xs, ys]).flatten(1)  # (3, HW)
    w = bg.flatten(1)  # (B, HW)
    A = torch.einsum("kp,bp,lp->bkl", basis, w, basis) + 1e-4 * torch.eye(3)
    rhs = torch.einsum("kp,bp,bp->bk", basis, w, images.mean(dim=1).flatten(1))
    coef = torch.linalg.solve(A, rhs)
    gradient = 2 * torch.sqrt(coef[:, 1] ** 2 + coef[:, 2] ** 2)  # brightness change across the image
    return torch.cat([fg_rgb, bg_rgb, gradient[:, None]], dim=1)


def frechet_distance(features: Tensor, reference: Tensor) -> float:
    """Frechet distance of Gaussians fitted to (N, D) ``features`` and (M, D) ``reference``, every
    feature divided by the reference's standard deviation first."""
    scale = reference.double().std(dim=0).clamp_min(1e-8)
    a = (features.double() / scale).numpy()
    b = (reference.double() / scale).numpy()
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr sqrt(A B) from the eigenvalues of sqrt(A) B sqrt(A) (symmetric, positive semi-definite)
    ev_a, vec_a = np.linalg.eigh(cov_a)
    sqrt_a = (vec_a * np.sqrt(ev_a.clip(0))) @ vec_a.T
    tr_sqrt = np.sqrt(np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clip(0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def colour_feature_shifts(features: Tensor, reference: Tensor) -> dict:
    """Which colour features make a Frechet distance: per feature of (N, 7) ``features`` against (M, 7)
    ``reference``, the shift of the mean and the ratio of the standard deviations, both in the reference's
    standard deviations (what ``frechet_distance`` divides by). A ratio well below 1 is variety lost."""
    scale = reference.double().std(dim=0).clamp_min(1e-8)
    shift = (features.double().mean(dim=0) - reference.double().mean(dim=0)) / scale
    ratio = features.double().std(dim=0) / scale
    return {name: {"mean_shift": round(float(m), 3), "std_ratio": round(float(r), 3)}
            for name, m, r in zip(COLOUR_FEATURE_NAMES, shift, ratio)}


def per_class_mean(values: Tensor, labels: Tensor, num_classes: int) -> Tuple[float, ...]:
    return tuple(values[labels == k].float().mean().item() for k in range(num_classes))
