"""``var-fast``: sample images from a VAR checkpoint (or the bundled default model) from the shell.

    var-fast sample --var var_d16.pth --vae vae_ch160v4096z32.pth --classes 207 360 --per-class 4 \\
        --cfg 4 --top-k 900 --top-p 0.96 --seed 0 --out samples/
    var-fast sample                      # the bundled default model, every class
    var-fast sample-fid --out fid/ --npz # 50 images per class for FID, resumable, also under torchrun
    var-fast edit --image in.png --box 16 16 48 48 --out out.png   # in-paint a box (var_fast/cli_edit.py)
    var-fast info                        # version and build of the native kernels
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import List, Optional, Sequence

import torch

from var_fast.cli_edit import add_edit_parser, run_edit
from var_fast.cli_fid import add_sample_fid_parser, run_sample_fid


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="var-fast", description="Fast sampling for VAR models.")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="sample class-conditional images to PNG files")
    s.add_argument("--var", help="VAR transformer checkpoint (.pth or .safetensors); default: the bundled model")
    s.add_argument("--vae", help="VQVAE checkpoint (.pth or .safetensors); default: the bundled model")
    s.add_argument("--classes", type=int, nargs="+", help="class labels (default: every class of a model "
                                                            "with at most 100 classes)")
    s.add_argument("--per-class", type=_positive_int, default=None, help="images per class (default 4)")
    s.add_argument("--cfg", type=float, default=None, help="classifier-free guidance (default 1.5, or the "
                                                          "bundled model's recommendation)")
    s.add_argument("--top-k", type=int, default=None, help="top-k filter, 0 disables (default 900 / bundled)")
    s.add_argument("--top-p", type=float, default=None, help="top-p filter in [0, 1], 0 disables (default 0.96)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--more-smooth", action="store_true", help="Gumbel-smoothed decoding (visualisation only)")
    s.add_argument("--out", default="samples", help="output folder (default ./samples)")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    s.add_argument("--backend", default="auto", choices=["auto", "reference", "fast"])
    s.add_argument("--batch-size", type=_positive_int, default=16, help="images per forward pass (default 16)")
    s.add_argument("--patch-nums", type=int, nargs="+", default=None,
                   help="patch layout when it cannot be read off the weights")
    add_sample_fid_parser(sub)
    add_edit_parser(sub)
    sub.add_parser("info", help="print version and native build information")
    return ap


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit="scale", file=sys.stderr, dynamic_ncols=True)
    except ImportError:  # tqdm is a dependency, but never fail a sampling run over a progress bar
        class _Plain:
            def update(self, n=1): pass
            def set_postfix_str(self, s): pass
            def close(self): pass
        return _Plain()


def save_png(image: torch.Tensor, path: str) -> None:
    """(3, H, W) in [0, 1] -> PNG, written to a temporary name first so no half-written file remains."""
    from PIL import Image
    array = image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    tmp = path + ".tmp"
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


def make_grid(images: torch.Tensor, ncol: int, pad: int = 2) -> torch.Tensor:
    """(N, 3, H, W) -> one (3, rows*(H+pad)+pad, ncol*(W+pad)+pad) image, white padding."""
    N, C, H, W = images.shape
    nrow = math.ceil(N / ncol)
    grid = torch.ones(C, nrow * (H + pad) + pad, ncol * (W + pad) + pad)
    for i in range(N):
        r, c = divmod(i, ncol)
        grid[:, pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = images[i]
    return grid


def sampling_flags(args, info: dict, cfg: float = 1.5, top_k: int = 900, top_p: float = 0.96):
    """(cfg, top_k, top_p): the flags given, else the bundled model's recommendation (``info``), else
    the defaults passed here."""
    rec = info.get("sampling", {})
    return (float(args.cfg if args.cfg is not None else rec.get("cfg", cfg)),
            int(args.top_k if args.top_k is not None else rec.get("top_k", top_k)),
            float(args.top_p if args.top_p is not None else rec.get("top_p", top_p)))


def run_sample(args) -> int:
    import var_fast
    from var_fast.default_model import chosen_checkpoints

    var_path, vae_path, info = chosen_checkpoints(args.var, args.vae)
    cfg, top_k, top_p = sampling_flags(args, info)
    rec = info.get("sampling", {})
    per_class = args.per_class or rec.get("per_class", 4)
    sampler = var_fast.load(var_path, vae_path, device=args.device, dtype=args.dtype, backend=args.backend,
                            patch_nums=args.patch_nums)
    if args.classes is None:
        if sampler.num_classes > 100:
            print(f"error: this model has {sampler.num_classes} classes; choose some with --classes", file=sys.stderr)
            return 2
        classes = list(range(sampler.num_classes))
    else:
        classes = args.classes
    bad = [c for c in classes if not (0 <= c < sampler.num_classes)]
    if bad:
        print(f"error: class {bad[0]} is out of range: this model has classes 0..{sampler.num_classes - 1}",
              file=sys.stderr)
        return 2
    from var_fast.labels import check_sampling_args
    try:
        check_sampling_args(cfg, top_k, top_p)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    labels = [c for c in classes for _ in range(per_class)]
    names = info.get("class_names")
    batches = [labels[i:i + args.batch_size] for i in range(0, len(labels), args.batch_size)]
    S = len(sampler.patch_nums)
    bar = _progress(len(batches) * S, f"sampling {len(labels)} images")
    images: List[torch.Tensor] = []
    counters = {c: 0 for c in classes}
    written = 0
    try:
        for bi, batch in enumerate(batches):
            bar.set_postfix_str(f"batch {bi + 1}/{len(batches)}")
            # fast backend: image_offset keeps every image independent of the batch size;
            # reference backend: the upstream generator, seeded per batch
            seed = args.seed if sampler.backend == "fast" else args.seed + bi
            out = sampler.sample(batch, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed, more_smooth=args.more_smooth,
                                 image_offset=bi * args.batch_size, on_scale=lambda si, n: bar.update(1)).cpu()
            for label, img in zip(batch, out):
                tag = f"{label:04d}" + (f"_{names[label]}" if names and label < len(names) else "")
                save_png(img, os.path.join(args.out, f"{tag}_{counters[label]:03d}.png"))
                counters[label] += 1
                written += 1
            images.append(out)
    finally:
        bar.close()
    grid = make_grid(torch.cat(images), ncol=per_class)
    save_png(grid, os.path.join(args.out, "grid.png"))
    meta = dict(var=args.var or "bundled", vae=args.vae or "bundled", classes=classes, per_class=per_class, cfg=cfg,
                top_k=top_k, top_p=top_p, seed=args.seed, backend=sampler.backend, device=str(sampler.device),
                dtype=args.dtype, batch_size=args.batch_size)
    with open(os.path.join(args.out, "settings.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(f"[var-fast] wrote {written} images and grid.png to {args.out}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        import var_fast
        print(json.dumps(var_fast.build_info(), indent=2))
        return 0
    try:
        if args.command == "sample-fid":
            return run_sample_fid(args)
        if args.command == "edit":
            return run_edit(args)
        return run_sample(args)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
