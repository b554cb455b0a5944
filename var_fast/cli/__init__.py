"""``var-fast``: sample images from a VAR checkpoint (or the bundled default model) from the shell.

    var-fast sample --var var_d16.pth --vae vae_ch160v4096z32.pth --classes 207 360 --per-class 4 \\
        --cfg 4 --top-k 900 --top-p 0.96 --seed 0 --out samples/
    var-fast sample --model d16 --classes 207   # a published model, downloaded once from Hugging Face
    var-fast sample                      # the bundled default model, every class
    var-fast sample-fid --out fid/ --npz # 50 images per class for FID, resumable, also under torchrun
    var-fast edit --image in.png --box 16 16 48 48 --out out.png   # in-paint a box
    var-fast info                        # version and build of the native kernels
    var-fast serve                       # a page and an HTTP API on 127.0.0.1:7860 (pip install var_fast[serve])

One module per command (sample, info, edit, sample_fid, serve); the flags they share are in common.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from var_fast.cli.edit import add_edit_parser, run_edit
from var_fast.cli.info import add_info_parser, run_info
from var_fast.cli.sample import add_sample_parser, run_sample
from var_fast.cli.sample_fid import add_sample_fid_parser, run_sample_fid
from var_fast.cli.serve import add_serve_parser, run_serve

COMMANDS = {"sample": run_sample, "sample-fid": run_sample_fid, "edit": run_edit, "info": run_info,
            "serve": run_serve}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="var-fast", description="Fast sampling for VAR models.")
    sub = ap.add_subparsers(dest="command", required=True)
    add_sample_parser(sub)
    add_sample_fid_parser(sub)
    add_edit_parser(sub)
    add_info_parser(sub)
    add_serve_parser(sub)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, RuntimeError, OSError, ImportError) as err:  # CheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2

