"""``var-fast sample``: class-conditional images to PNG files, a grid and the settings used."""
from __future__ import annotations

import math
import os
import sys
from typing import List

import torch

from var_fast.precision import dtype_name
from var_fast.cli.common import (SamplingDefaults, add_classes_flag, add_model_flags, add_runtime_flags,
                                 add_sampling_flags, check_model_flags, check_output_folder, command_line_device,
                                 pair_flags, per_class_help, positive_int, recommended, sampling_flags, save_png,
                                 temperature_flag)
from var_fast.cli.infinity_flags import add_infinity_flags, check_var_run, is_infinity_run
from var_fast.cli.sample_output import (GRID, check_earlier_run, clear_earlier_run, image_name, run_files,
                                        write_settings)
from var_fast.labels import derived_seed, parse_classes

DEFAULTS = SamplingDefaults(cfg=1.5, top_k=900, top_p=0.96, per_class=4)


def add_sample_parser(sub) -> None:
    s = sub.add_parser("sample", help="sample class-conditional images to PNG files",
                       description="One PNG per image, grid.png (a row per class) and settings.json in --out. "
                                   "Run again into the same folder, the files of the earlier run (listed in its "
                                   "settings.json) are removed first; other files are left alone.")
    add_model_flags(s, infinity=True)
    add_classes_flag(s, "every class of a model with at most 100 classes")
    s.add_argument("--per-class", type=positive_int, default=None, help=per_class_help(DEFAULTS))
    add_sampling_flags(s, DEFAULTS)
    s.add_argument("--more-smooth", action="store_true", help="Gumbel-smoothed decoding (visualisation only)")
    s.add_argument("--out", default="samples", help="output folder; an earlier var-fast sample run's files there "
                                                    "are replaced, other files kept (default: ./samples)")
    add_runtime_flags(s, backend_help="; reference seeds the upstream generator per batch")
    s.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per forward pass (default: 16); Infinity: images per call, each sampled alone "
                        "(default 1), or per pass with --batched (default: from free memory)")
    s.add_argument("--patch-nums", type=int, nargs="+", default=None,
                   help="patch layout when it cannot be read off the weights")
    add_infinity_flags(s)


def _progress(total: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="scale", file=sys.stderr, dynamic_ncols=True)


def make_grid(images: torch.Tensor, ncol: int, pad: int = 2) -> torch.Tensor:
    """(N, 3, H, W) -> one (3, rows*(H+pad)+pad, ncol*(W+pad)+pad) image, white padding."""
    N, C, H, W = images.shape
    nrow = math.ceil(N / ncol)
    grid = torch.ones(C, nrow * (H + pad) + pad, ncol * (W + pad) + pad)
    for i in range(N):
        r, c = divmod(i, ncol)
        grid[:, pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = images[i]
    return grid


def batch_seed(seed: int, batch_index: int) -> int:
    """The reference backend's generator seed for a batch: ``seed`` for the first (a one-batch run is
    ``Sampler.sample(labels, seed=seed)``), then a seed derived from (seed, batch), in [0, 2**63) for every
    seed and batch."""
    return seed if batch_index == 0 else derived_seed(seed, batch_index)


def run_sample(args) -> int:
    import var_fast
    from var_fast.default_model import chosen_checkpoints

    if is_infinity_run(args):
        from var_fast.cli.sample_infinity import run_infinity_sample
        return run_infinity_sample(args)
    # everything that can be checked without the model, before it loads
    check_var_run(args)
    check_model_flags(args)
    args.batch_size = args.batch_size or 16
    cfg, top_k, top_p = sampling_flags(args, DEFAULTS)
    temperature, pair = temperature_flag(args), pair_flags(args)
    per_class = args.per_class or recommended(args).get("per_class", DEFAULTS.per_class)
    classes = parse_classes(args.classes) if args.classes is not None else None
    check_output_folder(args.out)
    check_earlier_run(args.out)
    device = command_line_device(args.device)

    var_path, vae_path, info = chosen_checkpoints(args.var, args.vae, args.model)
    sampler = var_fast.load(var_path, vae_path, device=device, dtype=args.dtype, backend=args.backend,
                            patch_nums=args.patch_nums, **pair)
    if sampler.refiner is not None:
        from var_fast.collaborative import describe_cost
        elem = 4 if sampler.dtype == torch.float32 else 2
        print(f"[var_fast] {describe_cost(sampler.var.config, sampler.refiner.config, sampler.draft_steps, elem)}",
              file=sys.stderr)
    if classes is None:
        if sampler.num_classes > 100:
            raise ValueError(f"this model has {sampler.num_classes} classes; choose some with --classes")
        classes = tuple(range(sampler.num_classes))
    else:
        classes = parse_classes(args.classes, sampler.num_classes)
    names = info.get("class_names")
    files = run_files(classes, per_class, names)
    removed = clear_earlier_run(args.out, files)
    if removed:
        print(f"[var_fast] {args.out}: removed the {len(removed)} files of an earlier var-fast sample run there "
              f"(other files are kept)", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    settings = dict(var=args.var or args.model or "bundled", vae=args.vae or args.model or "bundled",
                    classes=list(classes), per_class=per_class, cfg=cfg, top_k=top_k, top_p=top_p,
                    temperature=temperature, refiner=pair.get("refiner"), draft_steps=pair.get("draft_steps"),
                    seed=args.seed, backend=sampler.backend, device=str(sampler.device),
                    dtype=dtype_name(sampler.dtype), batch_size=args.batch_size, files=files, complete=False)
    write_settings(args.out, settings)  # first: a run stopped half-way is still known as var_fast's
    labels = [c for c in classes for _ in range(per_class)]
    batches = [labels[i:i + args.batch_size] for i in range(0, len(labels), args.batch_size)]
    bar = _progress(len(batches) * len(sampler.patch_nums), f"sampling {len(labels)} images")
    images: List[torch.Tensor] = []
    counters = {c: 0 for c in classes}
    try:
        for bi, batch in enumerate(batches):
            bar.set_postfix_str(f"batch {bi + 1}/{len(batches)}")
            # fast backend: image_offset keeps every image independent of the batch size;
            # reference backend: the upstream generator, seeded per batch
            seed = args.seed if sampler.backend == "fast" else batch_seed(args.seed, bi)
            out = sampler.sample(batch, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed, more_smooth=args.more_smooth,
                                 temperature=temperature,
                                 image_offset=bi * args.batch_size, on_scale=lambda si, n: bar.update(1)).cpu()
            for label, img in zip(batch, out):
                save_png(img, os.path.join(args.out, image_name(label, counters[label], names)))
                counters[label] += 1
            images.append(out)
    finally:
        bar.close()
    save_png(make_grid(torch.cat(images), ncol=per_class), os.path.join(args.out, GRID))
    write_settings(args.out, dict(settings, complete=True))
    print(f"[var_fast] wrote {len(labels)} images and grid.png to {args.out}", file=sys.stderr)
    return 0
