"""The API's requests: JSON fields checked with the CLI's checks (one-line errors, before any work) and
uploaded images decoded only as PNG, JPEG or WebP within size and pixel limits."""
from __future__ import annotations

import base64
import binascii
import io
import math
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import torch

from var_fast.labels import check_sampling_args, check_seed

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
JS_SAFE_SEEDS = 1 << 53  # random seeds stay exact as JavaScript numbers (the page shows and reuses them)


class RequestError(ValueError):
    """A bad request: the message is sent to the client as is (HTTP 400 unless ``status`` says otherwise)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_images: int = 8                 # images per generation request
    max_upload_bytes: int = 8 << 20     # one decoded upload (image or mask)
    max_upload_pixels: int = 4096 * 4096
    max_body_bytes: int = 24 << 20      # a whole JSON body (base64 makes uploads 4/3 larger)


@dataclass(frozen=True)
class Sampling:
    cfg: float
    top_k: int
    top_p: float
    seed: int


@dataclass(frozen=True)
class GenerateRequest:
    label: int
    n: int
    sampling: Sampling
    preview: bool

    def settings(self) -> Dict[str, Any]:
        return dict(kind="generate", label=self.label, n=self.n, **asdict(self.sampling))


@dataclass(frozen=True)
class EditRequest:
    image: torch.Tensor      # (3, size, size) in [0, 1]
    keep_mask: torch.Tensor  # (size, size) in [0, 1]: 1 keeps, 0 is generated
    label: Optional[int]     # None: unconditional
    sampling: Sampling

    def settings(self) -> Dict[str, Any]:
        return dict(kind="edit", label=self.label, **asdict(self.sampling))


def _check_fields(body: Any, allowed) -> Dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(sorted(allowed))}")
    return body


def _int(body, name: str, default=None) -> Optional[int]:
    value = body.get(name, default)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    raise RequestError(f"{name} must be an integer, got {value!r}")


def _number(body, name: str, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _label(value: Optional[int], num_classes: int, name: str = "class", allow_none: bool = False) -> Optional[int]:
    if value is None:
        if allow_none:
            return None
        raise RequestError(f"{name} is required (0..{num_classes - 1})")
    lo = -1 if allow_none else 0
    if not lo <= value < num_classes:
        extra = " or -1 / absent for none" if allow_none else ""
        raise RequestError(f"{name} {value} is out of range: this model has classes 0..{num_classes - 1}{extra}")
    return value


def _sampling(body, defaults: Dict[str, float]) -> Sampling:
    cfg = _number(body, "cfg", defaults["cfg"])
    top_k = _int(body, "top_k", defaults["top_k"])
    top_p = _number(body, "top_p", defaults["top_p"])
    seed = _int(body, "seed")
    if seed is None:
        seed = secrets.randbelow(JS_SAFE_SEEDS)  # reported back in the settings, so the image can be reproduced
    try:
        check_sampling_args(cfg, top_k, top_p)
        check_seed(seed)
    except ValueError as err:
        raise RequestError(str(err)) from None
    return Sampling(cfg=cfg, top_k=top_k, top_p=top_p, seed=seed)


GENERATE_FIELDS = ("class", "n", "cfg", "top_k", "top_p", "seed", "preview")
EDIT_FIELDS = ("image", "mask", "class", "cfg", "top_k", "top_p", "seed")


def parse_generate(body: Any, num_classes: int, defaults: Dict[str, float], limits: Limits) -> GenerateRequest:
    body = _check_fields(body, GENERATE_FIELDS)
    label = _label(_int(body, "class"), num_classes)
    n = _int(body, "n", 1)
    if not 1 <= n <= limits.max_images:
        raise RequestError(f"n must be in 1..{limits.max_images} (images per request), got {n}")
    preview = body.get("preview", False)
    if not isinstance(preview, bool):
        raise RequestError(f"preview must be true or false, got {preview!r}")
    return GenerateRequest(label=label, n=n, sampling=_sampling(body, defaults), preview=preview)


def decode_image(data: Any, name: str, limits: Limits):
    """A base64 string (or a data: URL) -> a decoded PIL image, refusing anything but PNG/JPEG/WebP
    and anything over the byte or pixel limits before its pixels are decoded."""
    from PIL import Image
    if not isinstance(data, str) or not data:
        raise RequestError(f"{name} must be a base64 string or a data: URL of a PNG, JPEG or WebP image")
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        if not head.endswith(";base64"):
            raise RequestError(f"{name}: only base64 data: URLs are accepted")
    if len(data) > (limits.max_upload_bytes * 4) // 3 + 4:
        raise RequestError(f"{name} is larger than {limits.max_upload_bytes} bytes", status=413)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{name} is not valid base64") from None
    if len(raw) > limits.max_upload_bytes:
        raise RequestError(f"{name} is larger than {limits.max_upload_bytes} bytes", status=413)
    try:
        image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
        w, h = image.size
        if w * h > limits.max_upload_pixels:
            raise RequestError(f"{name} is {w}x{h}: more than {limits.max_upload_pixels} pixels", status=413)
        image.load()
    except RequestError:
        raise
    except Exception as err:  # PIL raises many types for undecodable data; none must reach the client raw
        raise RequestError(f"{name} could not be decoded as a PNG, JPEG or WebP image ({type(err).__name__})") from None
    return image


def parse_edit(body: Any, num_classes: int, image_size: int, grid_size: int, defaults: Dict[str, float],
               limits: Limits) -> EditRequest:
    from PIL import Image

    from var_fast.editing import _pil_to_tensor, fit_square, mask_from_image
    body = _check_fields(body, EDIT_FIELDS)
    label = _label(_int(body, "class"), num_classes, allow_none=True)
    sampling = _sampling(body, defaults)
    if "image" not in body or "mask" not in body:
        raise RequestError("an edit needs image and mask (white keeps the image, black is generated)")
    image = decode_image(body["image"], "image", limits)
    mask = decode_image(body["mask"], "mask", limits)
    fitted = _pil_to_tensor(fit_square(image.convert("RGB"), image_size, Image.LANCZOS))
    if mask.size == (image_size, image_size) or mask.size == (grid_size, grid_size):
        keep = mask_from_image(mask)
    elif mask.size == image.size:
        keep = mask_from_image(mask, image_size)
    else:
        raise RequestError(f"mask is {mask.size[0]}x{mask.size[1]}: it must have the image's size "
                           f"({image.size[0]}x{image.size[1]}), the model's ({image_size}x{image_size}) or the "
                           f"token grid's ({grid_size}x{grid_size})")
    return EditRequest(image=fitted, keep_mask=keep, label=None if label in (None, -1) else label, sampling=sampling)
