"""``var-fast edit``: zero-shot in-painting, out-painting and class-conditional editing of one image.

    var-fast edit --image in.png --box 16 16 48 48 --out out.png             # regenerate the box
    var-fast edit --image in.png --box 8 8 56 56 --outpaint --out out.png    # keep the box, generate around it
    var-fast edit --image in.png --mask mask.png --class 3 --out out.png     # white keeps, black is generated
"""
from __future__ import annotations

import os
import sys

from var_fast.cli.common import (IMAGE_FORMATS, SamplingDefaults, add_model_flags, add_runtime_flags,
                                 add_sampling_flags, check_model_flags, check_output_file, command_line_device,
                                 image_format, pair_flags, sampling_flags, save_image, temperature_flag)

DEFAULTS = SamplingDefaults(cfg=4.0, top_k=900, top_p=0.95)

DESCRIPTION = """Zero-shot editing with a VAR model: the input is kept where the mask is 1 (white) and new
content is generated where it is 0 (black), unconditionally or towards --class. The input image is
resized (shorter side) and center-cropped to the model's resolution."""


def add_edit_parser(sub) -> None:
    e = sub.add_parser("edit", help="in-paint, out-paint or re-class an image", description=DESCRIPTION)
    e.add_argument("--image", required=True, help="input image (PNG, JPEG, ...)")
    where = e.add_mutually_exclusive_group(required=True)
    where.add_argument("--mask", help="keep-mask image: white (255) keeps the input, black (0) is generated, grey "
                                      "is fractional (a token is kept when more than half of it is). Same size as "
                                      "--image (it is resized/cropped with it) or the model's last token grid")
    where.add_argument("--box", type=int, nargs=4, metavar=("Y0", "X0", "Y1", "X1"),
                       help="box to generate (in-painting), in pixels of the model's resolution after the "
                            "resize/crop, end-exclusive")
    e.add_argument("--outpaint", action="store_true", help="with --box: keep the box and generate around it")
    e.add_argument("--class", dest="label", type=int, default=None,
                   help="class to edit towards (default: none, unconditional in-painting; -1 is "
                        "also unconditional)")
    e.add_argument("--out", required=True, help="output image; its suffix names the format ("
                   + ", ".join(IMAGE_FORMATS) + "; JPEG at quality 95). An existing file is replaced")
    add_model_flags(e)
    add_sampling_flags(e, DEFAULTS)
    e.add_argument("--more-smooth", action="store_true", help="Gumbel-smoothed decoding (visualisation only)")
    add_runtime_flags(e)
    e.add_argument("--patch-nums", type=int, nargs="+", default=None,
                   help="patch layout when it cannot be read off the weights")


def _keep_mask(args, size: int, grid: int, image_size_wh):
    from PIL import Image

    from var_fast.editing import inpaint_mask, mask_from_image, outpaint_mask
    if args.box is not None:
        return (outpaint_mask if args.outpaint else inpaint_mask)(size, *args.box)
    with Image.open(args.mask) as img:
        mask_wh = img.size
    if mask_wh == (grid, grid):
        return mask_from_image(args.mask)
    if mask_wh != tuple(image_size_wh):
        raise ValueError(f"--mask is {mask_wh[0]}x{mask_wh[1]}: it must have the input image's size "
                         f"({image_size_wh[0]}x{image_size_wh[1]}) or the token grid's ({grid}x{grid})")
    return mask_from_image(args.mask, size)


def run_edit(args) -> int:
    import var_fast
    from var_fast.default_model import chosen_checkpoints
    from var_fast.editing import load_image

    # everything that can be checked without the model, before it loads
    if args.outpaint and args.box is None:
        raise ValueError("--outpaint needs --box (with --mask, paint what to keep white)")
    check_model_flags(args)
    cfg, top_k, top_p = sampling_flags(args, DEFAULTS)
    temperature, pair = temperature_flag(args), pair_flags(args)
    check_output_file(args.out)
    image_format(args.out)
    device = command_line_device(args.device)

    var_path, vae_path, _ = chosen_checkpoints(args.var, args.vae, args.model)
    sampler = var_fast.load(var_path, vae_path, device=device, dtype=args.dtype, backend=args.backend,
                            patch_nums=args.patch_nums, **pair)
    size = sampler.image_size
    try:
        image, (w, h) = load_image(args.image, size)
    except OSError as err:
        raise ValueError(f"cannot read --image {args.image}: {err}") from err
    if (w, h) != (size, size):
        print(f"[var_fast] {args.image} is {w}x{h}: resized (shorter side to {size}) and center-cropped to "
              f"{size}x{size}, the model's resolution", file=sys.stderr)
    try:
        mask = _keep_mask(args, size, sampler.patch_nums[-1], (w, h))
    except OSError as err:
        raise ValueError(f"cannot read --mask {args.mask}: {err}") from err
    edited = sampler.edit(image.unsqueeze(0), mask, args.label, cfg=cfg, top_k=top_k, top_p=top_p, seed=args.seed,
                          more_smooth=args.more_smooth, temperature=temperature)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_image(edited[0], args.out)
    print(f"[var_fast] wrote {args.out}", file=sys.stderr)
    return 0
