"""Zero-shot editing (in-painting, out-painting, class-conditional editing): keep masks and the runner
behind ``Sampler.edit``.

A keep mask is 1 where the input image is kept and 0 where new content is generated, given at pixel
resolution (H, W) or on the last scale's token grid; a pixel mask is reduced to the token grid by area
averaging, a token being kept when more than half of its pixels are (> 0.5, the notebook's threshold).
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .labels import Labels, check_sampling_args, check_seed, resolve_labels
from .reference.autoregressive import autoregressive_infer_cfg
from .reference.edit import TeacherForcing, scale_keep_masks
from .schedules import Schedule

Size = Union[int, Tuple[int, int]]


# ---- masks --------------------------------------------------------------------------------------------
def _box_mask(size: Size, y0: int, x0: int, y1: int, x1: int) -> torch.Tensor:
    H, W = (size, size) if isinstance(size, int) else size
    coords = (y0, x0, y1, x1)
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in coords):
        raise ValueError(f"box coordinates must be integers (pixels), got {coords}")
    if not (0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W):
        raise ValueError(f"box (y0={y0}, x0={x0}, y1={y1}, x1={x1}) must satisfy 0 <= y0 < y1 <= {H} and "
                         f"0 <= x0 < x1 <= {W} (end-exclusive pixel coordinates)")
    mask = torch.zeros(H, W)
    mask[y0:y1, x0:x1] = 1
    return mask


def inpaint_mask(size: Size, y0: int, x0: int, y1: int, x1: int) -> torch.Tensor:
    """(H, W) keep mask that regenerates the box [y0, y1) x [x0, x1) and keeps everything else."""
    return 1 - _box_mask(size, y0, x0, y1, x1)


def outpaint_mask(size: Size, y0: int, x0: int, y1: int, x1: int) -> torch.Tensor:
    """(H, W) keep mask that keeps the box [y0, y1) x [x0, x1) and generates everything around it."""
    return _box_mask(size, y0, x0, y1, x1)


def fit_square(image, size: int, resample):
    """A PIL image resized so that its shorter side is ``size``, then center-cropped to size x size."""
    W, H = image.size
    scale = size / min(W, H)
    w, h = max(size, round(W * scale)), max(size, round(H * scale))
    if (w, h) != (W, H):
        image = image.resize((w, h), resample=resample)
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_image(path: Union[str, os.PathLike], size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """An image file -> ((3, size, size) float in [0, 1], its original (width, height)), fitted with
    ``fit_square`` (Lanczos)."""
    from PIL import Image
    with Image.open(path) as img:
        original = img.size
        fitted = fit_square(img.convert("RGB"), size, Image.LANCZOS)
    return _pil_to_tensor(fitted), original


def mask_from_image(image, size: Optional[int] = None) -> torch.Tensor:
    """A mask image (path or PIL image) -> (H, W) keep mask in [0, 1]: white (255) keeps, black (0)
    generates, grey is fractional. With ``size``, fitted as ``load_image`` fits its image (bilinear)."""
    from PIL import Image
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as img:
            return mask_from_image(img.copy(), size)
    gray = image.convert("L")
    if size is not None:
        gray = fit_square(gray, size, Image.BILINEAR)
    return _pil_to_tensor(gray)[0]


def _pil_to_tensor(image) -> torch.Tensor:
    import numpy as np
    array = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
    if array.dim() == 2:
        array = array.unsqueeze(-1)
    return array.permute(2, 0, 1).float().div_(255)


def token_keep_mask(keep_mask, image_size: int, grid_size: int, batch_size: int) -> torch.Tensor:
    """A keep mask (H, W) or (B, H, W) at pixel or token-grid resolution -> (B, g, g) float on the grid.

    A token-grid mask is used as given (values in [0, 1]); a pixel mask is area-averaged per token and
    thresholded (> 0.5) to 0/1.
    """
    if not isinstance(keep_mask, torch.Tensor):
        keep_mask = torch.as_tensor(keep_mask)
    if keep_mask.is_complex():
        raise ValueError(f"keep_mask must be real, got dtype {keep_mask.dtype}")
    mask = keep_mask.float()
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    if mask.dim() != 3 or mask.shape[0] not in (1, batch_size):
        raise ValueError(f"keep_mask must have shape (H, W) or ({batch_size}, H, W) for {batch_size} image(s), "
                         f"got {tuple(keep_mask.shape)}")
    size = tuple(mask.shape[-2:])
    if size not in ((image_size, image_size), (grid_size, grid_size)):
        raise ValueError(f"keep_mask must be {image_size}x{image_size} (pixels) or {grid_size}x{grid_size} "
                         f"(the token grid of the last scale), got {size[0]}x{size[1]}")
    if not bool(torch.isfinite(mask).all()) or bool((mask < 0).any()) or bool((mask > 1).any()):
        raise ValueError(f"keep_mask values must be in [0, 1] (1 keeps the input, 0 generates), got min "
                         f"{float(mask.min())}, max {float(mask.max())}")
    if size != (grid_size, grid_size):
        mask = F.interpolate(mask.unsqueeze(1), size=(grid_size, grid_size), mode="area").squeeze(1).gt(0.5).float()
    return mask.expand(batch_size, grid_size, grid_size).contiguous()


def edit_labels(labels: Labels, num_classes: int, batch_size: int, device) -> torch.Tensor:
    """None -> the unconditional class ("no class", ``num_classes``) for every image; otherwise as
    ``resolve_labels``, with one label per image (or one int for all)."""
    if labels is None:
        return torch.full((batch_size,), num_classes, dtype=torch.long, device=device)
    label_B = resolve_labels(labels, num_classes, batch_size if isinstance(labels, int) else None, device)
    if label_B.numel() != batch_size:
        raise ValueError(f"got {label_B.numel()} labels for {batch_size} image(s): give one label per image or one int")
    return label_B


# ---- the editing run -------------------------------------------------------------------------------
@torch.no_grad()
def edit_images(sampler, images: torch.Tensor, keep_mask, labels: Labels = None, *, cfg: float = 4.0,
                top_k: Schedule = 900, top_p: float = 0.95, seed: Optional[int] = None, more_smooth: bool = False,
                return_tokens: bool = False, temperature: Schedule = 1.0,
                draft_steps: Optional[int] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, List[torch.Tensor]]]:
    """``Sampler.edit`` (see its docstring). With a drafter/refiner pair the kept tokens are
    teacher-forced in both models (the refiner's prefill takes the drafter's forced scales)."""
    top_k, temperature, draft_steps = sampler.sampling_schedules(top_k, temperature, draft_steps)
    check_sampling_args(cfg, top_k[0], top_p)
    check_seed(seed)
    x = sampler._check_images(images)
    if bool((x < 0).any()) or bool((x > 1).any()) or not bool(torch.isfinite(x).all()):
        raise ValueError("images must have values in [0, 1]")
    B = x.shape[0]
    label_B = edit_labels(labels, sampler.num_classes, B, sampler.device)
    pns = sampler.patch_nums
    token_mask = token_keep_mask(keep_mask, sampler.image_size, pns[-1], B).to(sampler.device)
    keep = scale_keep_masks(token_mask, pns)
    kept_everywhere = torch.stack([k.all(dim=1) for k in keep]).all(dim=0)
    if bool(kept_everywhere.any()):
        b = int(kept_everywhere.nonzero()[0])
        raise ValueError(f"keep_mask keeps all of image {b}: nothing to generate (0 marks what to generate)")
    input_tokens = sampler.encode(x)
    if sampler.backend == "reference":
        rng = None
        if seed is not None:
            rng = torch.Generator(device=sampler.device)
            rng.manual_seed(int(seed))
        forcing = TeacherForcing(input_tokens, keep, sampler.vae.quantize.embedding.weight)
        with sampler._autocast():
            if sampler.refiner is not None:
                from .reference.collaborative import collaborative_infer_cfg
                f_hat, tokens = collaborative_infer_cfg(sampler.var, sampler.refiner, sampler.vae, label_B, B, seed,
                                                        draft_steps, cfg, top_k, top_p, temperature, more_smooth,
                                                        teacher_force=forcing)
            else:
                f_hat, tokens = autoregressive_infer_cfg(sampler.var, sampler.vae, label_B, rng, cfg=cfg, top_k=top_k,
                                                         top_p=top_p, more_smooth=more_smooth, teacher_force=forcing,
                                                         temperature=temperature)
        out = sampler._decode_fhat(f_hat)
    else:
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        fast = sampler._fast_sampler()
        forcing = TeacherForcing(input_tokens, keep, fast.codebook)
        chunk = sampler.max_batch_size or sampler._auto_batch_size()
        parts, token_parts = [], []
        for start in range(0, B, chunk):  # image b draws from (seed, b) whatever the chunking
            stop = min(B, start + chunk)
            f_hat, toks = fast.sample(label_B[start:stop], seed=int(seed), cfg=cfg, top_k=top_k, top_p=top_p,
                                      more_smooth=more_smooth, image_offset=start,
                                      teacher_force=forcing.rows(start, stop), temperature=temperature,
                                      **sampler._fast_pair(draft_steps))
            parts.append(sampler._decode_fhat(f_hat))
            token_parts.append(toks)
        out = torch.cat(parts)
        tokens = [torch.cat(scale) for scale in zip(*token_parts)]
    return (out, tokens) if return_tokens else out
