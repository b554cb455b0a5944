"""What the var-fast commands share: the model and sampling flags (with the defaults that will really be
used), checks of everything that can be checked before a model loads, and writing a PNG."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch

from var_fast.default_model import check_model_choice, default_model_info
from var_fast.labels import SEED_LIMIT, check_sampling_args
from var_fast.schedules import parse_schedule, per_scale


@dataclass(frozen=True)
class SamplingDefaults:
    """A command's sampling settings for a model without recommendations (the bundled one has its own)."""
    cfg: float
    top_k: int
    top_p: float
    per_class: int = 4


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def seed_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must satisfy 0 <= seed < 2**63 (= {SEED_LIMIT}), got {text}")
    return value


def _default_text(name: str, otherwise) -> str:
    """'default: 8 for the bundled model, 4 otherwise', read off the bundled model's recommendations."""
    bundled = default_model_info().get("sampling", {}).get(name)
    if bundled is None or bundled == otherwise:
        return f"default: {otherwise}"
    return f"default: {bundled:g} for the bundled model, {otherwise:g} otherwise"


def add_model_flags(p: argparse.ArgumentParser, infinity: bool = False) -> None:
    """--model (VAR's published names, and Infinity's with ``infinity``: sample, sample-fid), --var, --vae,
    --refiner, --draft-steps."""
    from var_fast.hub import INFINITY_MODEL_NAMES, MODEL_NAMES
    p.add_argument("--model", choices=sorted(MODEL_NAMES) + (list(INFINITY_MODEL_NAMES) if infinity else []),
                   help="a published checkpoint by name, downloaded once from huggingface.co/FoundationVision/var "
                        "(VAR) or huggingface.co/FoundationVision/Infinity + google/flan-t5-xl (Infinity) into the "
                        "Hugging Face cache (HF_HUB_CACHE, HF_HUB_OFFLINE are honoured)")
    p.add_argument("--var", help="VAR transformer checkpoint (.pth or .safetensors); default: the bundled model")
    p.add_argument("--vae", help="VQVAE checkpoint (.pth or .safetensors); default: the bundled model (Infinity: its BSQ "
                                 "VAE, with --transformer and --text-encoder)")
    p.add_argument("--refiner", default=None,
                   help="collaborative decoding (CoDe): a smaller VAR (published name such as d16, or a checkpoint) "
                        "that samples the scales after --draft-steps; the model above drafts the first ones")
    p.add_argument("--draft-steps", type=int, default=None,
                   help="with --refiner: scales the drafter samples (CoDe: 8 or 6 for d30 + d16)")


def add_sampling_flags(p: argparse.ArgumentParser, defaults: SamplingDefaults) -> None:
    p.add_argument("--cfg", type=float, default=None,
                   help=f"classifier-free guidance, >= 0 ({_default_text('cfg', defaults.cfg)})")
    p.add_argument("--top-k", default=None,
                   help=f"top-k filter, 0 disables; one value or one per scale, comma-separated "
                        f"({_default_text('top_k', defaults.top_k)})")
    p.add_argument("--temperature", default=None,
                   help="divides the logits after top-k/top-p; one value or one per scale, comma-separated "
                        "(default: 1; CoDe: 1.1 on the first 7 scales, then 1.0)")
    p.add_argument("--top-p", type=float, default=None,
                   help=f"top-p filter in [0, 1], 0 disables ({_default_text('top_p', defaults.top_p)})")
    p.add_argument("--seed", type=seed_int, default=0, help="0 <= seed < 2**63 (default: 0)")


def add_dtype_flag(p: argparse.ArgumentParser) -> None:
    from var_fast.precision import AUTO, AUTO_HELP
    p.add_argument("--dtype", default=AUTO, choices=[AUTO, "float32", "bfloat16", "float16"],
                   help=f"compute dtype; {AUTO_HELP} (default: {AUTO})")


def add_classes_flag(p: argparse.ArgumentParser, default: str) -> None:
    """--classes, one syntax for every command (var_fast.labels.parse_classes)."""
    p.add_argument("--classes", nargs="+", metavar="CLASSES",
                   help=f"class labels: numbers, ranges and lists such as 207 360, 0-9 or 1,5,7 (default: {default})")


def per_class_help(defaults: SamplingDefaults) -> str:
    return f"images per class ({_default_text('per_class', defaults.per_class)})"


def add_runtime_flags(p: argparse.ArgumentParser, device_help: str = "", backend_help: str = "") -> None:
    """--device, --dtype and --backend; their help shows the default argparse will use."""
    p.add_argument("--device", default=None,
                   help=f"cpu, cuda, cuda:1 ... (default: cuda if available, else cpu{device_help})")
    add_dtype_flag(p)
    p.add_argument("--backend", default="auto", choices=["auto", "reference", "fast"],
                   help="reference: plain PyTorch, the upstream algorithm; fast: the native kernels; auto: fast "
                        f"when they are built{backend_help} (default: %(default)s)")


def command_line_device(text):
    """--device as a torch.device, checked before the model loads; without a GPU, 'cuda' names the flag's fix."""
    from var_fast.devices import resolve_device
    try:
        return resolve_device(text, cpu_fix="--device cpu")
    except ValueError:
        raise ValueError(f"--device {text!r} is not a device: use cpu, cuda or cuda:<index>") from None


def process_device(arg, local_rank: int, world: int) -> torch.device:
    """sample-fid's device for this process: under torchrun each process takes the GPU of its LOCAL_RANK."""
    device = command_line_device(arg)
    if device.type != "cuda":
        return device
    if world > 1 and device.index not in (None, local_rank):
        raise ValueError("under torchrun pass --device cuda: each process takes the GPU of its LOCAL_RANK")
    return torch.device("cuda", local_rank if device.index is None else device.index)


def uses_bundled_model(args) -> bool:
    return args.var is None and args.vae is None and getattr(args, "model", None) is None


def check_model_flags(args) -> None:
    """--model alone, --var with --vae, or none of them (the bundled model)."""
    check_model_choice(args.var, args.vae, getattr(args, "model", None))


def recommended(args) -> dict:
    """The bundled model's recommended settings when it is the model used, else {}."""
    return default_model_info().get("sampling", {}) if uses_bundled_model(args) else {}


def sampling_flags(args, defaults: SamplingDefaults):
    """(cfg, top_k, top_p): the flags given, else the bundled model's recommendation, else ``defaults``;
    checked (ValueError), so that bad values fail before any model loads."""
    rec = recommended(args)
    cfg = float(args.cfg if args.cfg is not None else rec.get("cfg", defaults.cfg))
    top_k = parse_schedule("top_k", args.top_k) if args.top_k is not None else int(rec.get("top_k", defaults.top_k))
    top_p = float(args.top_p if args.top_p is not None else rec.get("top_p", defaults.top_p))
    if isinstance(top_k, list):  # the count is checked against the model's scales when it loads
        per_scale("top_k", top_k, len(top_k))
    check_sampling_args(cfg, top_k[0] if isinstance(top_k, list) else top_k, top_p)
    return cfg, top_k, top_p


def temperature_flag(args):
    """--temperature: one number or a list of one per scale (checked; the count when the model loads)."""
    text = getattr(args, "temperature", None)
    if text is None:
        return 1.0
    value = parse_schedule("temperature", text)
    per_scale("temperature", value, len(value) if isinstance(value, list) else 1)
    return value


def pair_flags(args) -> dict:
    """var_fast.load's refiner= and draft_steps= from --refiner / --draft-steps."""
    refiner, steps = getattr(args, "refiner", None), getattr(args, "draft_steps", None)
    if steps is not None and refiner is None:
        raise ValueError("--draft-steps needs --refiner (collaborative decoding with a drafter and a refiner)")
    if refiner is not None and steps is None:
        raise ValueError("--refiner needs --draft-steps: the number of scales the drafter samples (CoDe: 8 or 6)")
    return {} if refiner is None else dict(refiner=refiner, draft_steps=steps)


# ---- output paths, checked before the model loads; nothing is created ----------------------------
def _check_creatable(path: str, flag: str) -> None:
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ValueError(f"{flag} {path}: {parent} is a file, not a folder")
    if parent and not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} {path}: cannot write in {parent}")


def check_output_folder(path: str, flag: str = "--out") -> None:
    """``path`` is a writable folder or can be made one."""
    full = os.path.abspath(path)
    if os.path.exists(full):
        if not os.path.isdir(full):
            raise ValueError(f"{flag} {path} is an existing file; it must be a folder (new or existing)")
        if not os.access(full, os.W_OK):
            raise ValueError(f"{flag} {path}: cannot write in this folder")
        return
    _check_creatable(full, flag)


def check_output_file(path: str, flag: str = "--out") -> None:
    """``path`` is a file that can be written (an existing file is replaced)."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise ValueError(f"{flag} {path} is an existing folder; it must be a file name (new, or a file to replace)")
    if os.path.exists(full) and not os.path.isfile(full):
        raise ValueError(f"{flag} {path} exists and is not a regular file")
    _check_creatable(full, flag)


# suffix -> (Pillow format, save options): formats that hold an RGB image as it is
IMAGE_FORMATS = {".png": ("PNG", {}), ".jpg": ("JPEG", {"quality": 95}), ".jpeg": ("JPEG", {"quality": 95}),
                 ".bmp": ("BMP", {}), ".tif": ("TIFF", {}), ".tiff": ("TIFF", {})}


def image_format(path: str, flag: str = "--out"):
    """(Pillow format, options) of the format ``path``'s suffix names; another suffix is a ValueError."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in IMAGE_FORMATS:
        raise ValueError(f"{flag} {path}: its suffix names the image format written; use one of "
                         f"{', '.join(IMAGE_FORMATS)} (got {suffix or 'no suffix'})")
    return IMAGE_FORMATS[suffix]


def _write_image(image: torch.Tensor, path: str, fmt: str, options: dict) -> None:
    """(3, H, W) in [0, 1] -> ``path``, written to a temporary name first so no half-written file remains."""
    from PIL import Image
    array = image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    tmp = path + ".tmp"
    try:
        Image.fromarray(array).save(tmp, format=fmt, **options)
        os.replace(tmp, path)
    finally:
        if os.path.isfile(tmp):
            os.remove(tmp)


def save_image(image: torch.Tensor, path: str) -> None:
    """An image file in the format its suffix names (PNG, JPEG at quality 95, BMP, TIFF)."""
    _write_image(image, path, *image_format(path, "path"))


def save_png(image: torch.Tensor, path: str) -> None:
    """A PNG, whatever the name."""
    _write_image(image, path, "PNG", {})
