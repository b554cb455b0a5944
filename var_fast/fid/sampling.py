"""FID-scale sampling: N = len(classes) * per_class images, image i of class classes[i // per_class]
written to ``DIR/{i:06d}.png``.

Image i's random numbers depend on (seed, i) alone: the fast backend's draws are keyed by (seed, image
index, token) and every batch is sampled with ``image_offset`` = its first index. Batches are fixed
ranges of indices [k * batch_size, (k + 1) * batch_size), dealt to the ranks round-robin, so for a
given batch size any number of processes and any interruption give the same bytes (the batch size
itself can change floating-point rounding in the model, and so, rarely, a draw). A resumed run
re-samples a partly written batch whole and writes only its missing images.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .batches import IndexBatches
from .distributed import ProcessGroup
from .files import (PngWriter, RunMismatchError, check_or_write_manifest, finished_images, npz_path, pack_npz,
                        remove_stale_temps)
from ..labels import check_sampling_args, check_seed, format_classes, parse_classes  # noqa: F401 (re-exported)
from ..labels import derived_seed as image_seed  # a 63-bit generator seed per (seed, image index)
from ..sampler import Sampler


@dataclass(frozen=True)
class FidJob(IndexBatches):
    classes: Tuple[int, ...]
    per_class: int
    batch_size: int
    seed: int
    cfg: float
    top_k: Union[int, List[int]]
    top_p: float
    temperature: Union[float, List[float]] = 1.0
    draft_steps: Optional[int] = None  # collaborative decoding (a sampler with a refiner)

    def __post_init__(self):
        if not self.classes:
            raise ValueError("classes is empty")
        for name in ("per_class", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        check_sampling_args(self.cfg, self.top_k[0] if isinstance(self.top_k, list) else self.top_k, self.top_p)
        check_seed(self.seed)

    @property
    def total(self) -> int:
        return len(self.classes) * self.per_class

    def label(self, index: int) -> int:
        return self.classes[index // self.per_class]

    def pixels(self, sampler: Sampler, indices: range) -> np.ndarray:
        return sample_pixels(sampler, self, indices)


def sample_pixels(sampler: Sampler, job: FidJob, indices: range) -> np.ndarray:
    """Images ``indices`` of the job as (B, H, W, 3) uint8."""
    labels = [job.label(i) for i in indices]
    kw = dict(cfg=job.cfg, top_k=job.top_k, top_p=job.top_p, temperature=job.temperature, draft_steps=job.draft_steps)
    if sampler.backend == "fast":
        images = sampler.sample(labels, seed=job.seed, image_offset=indices.start, **kw)
    else:  # upstream's generator draws for a whole batch at once: one image per call keeps each image's draws its own
        images = torch.cat([sampler.sample([label], seed=image_seed(job.seed, i), **kw)
                            for i, label in zip(indices, labels)])
    pixels = images.clamp(0, 1).mul(255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()


@dataclass
class FidSummary:
    images: int
    written: int
    skipped: int
    seconds: float
    out: str
    npz: Optional[str] = None

    def line(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        where = self.out + (f" and {self.npz}" if self.npz else "")
        return (f"[var_fast] sample-fid: {self.images} images; {self.written} written, {self.skipped} were already "
                f"there; {self.seconds:.1f} s, {rate:.2f} images/s; {where}")


def _progress(total: int, desc: str, unit: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=not enabled)


def run_fid_job(sampler: Sampler, job: FidJob, out: str, group: ProcessGroup, manifest: Optional[dict],
                npz: bool = False) -> FidSummary:
    """This rank's share of the job (``manifest`` is needed on rank 0 only); rank 0 then checks that all
    images exist and packs the .npz. ``job``: a FidJob, or anything with its ``total``, ``batch_size``,
    ``batches_of_rank`` and ``pixels(sampler, indices)`` (var_fast.fid.prompt_job.PromptJob: Infinity)."""
    sampler.max_batch_size = job.batch_size  # one pass per batch, never split by free memory: same rounding everywhere
    os.makedirs(out, exist_ok=True)
    error = None
    if group.is_main:
        try:
            check_or_write_manifest(out, manifest, job.total)
            remove_stale_temps(out)
        except RunMismatchError as err:
            error = str(err)
    error = group.broadcast_from_main(error)  # also the barrier: no rank writes before the manifest is settled
    if error:
        raise RunMismatchError(error)

    done = finished_images(out, job.total)
    mine = job.batches_of_rank(group.rank, group.world)
    todo = [r for r in mine if not all(i in done for i in r)]
    desc = "sample-fid" + (f" (rank 0 of {group.world})" if group.world > 1 else "")  # ranks share the work evenly
    bar = _progress(sum(len(r) for r in todo), desc, "img", group.is_main)
    start = time.perf_counter()
    written = 0
    try:
        with PngWriter(out) as writer:
            for indices in todo:
                pixels = job.pixels(sampler, indices)
                for i in indices:
                    if i not in done:
                        writer.submit(pixels[i - indices.start], i)
                        written += 1
                bar.update(len(indices))
    finally:
        bar.close()
    skipped = sum(len(r) for r in mine) - written
    # all_reduce returns once every rank has closed its writer: all images are renamed into place
    written, skipped = group.sum([written, skipped])
    summary = FidSummary(job.total, written, skipped, time.perf_counter() - start, out)
    if group.is_main:
        missing = sorted(set(range(job.total)) - finished_images(out, job.total))
        if missing:
            raise RuntimeError(f"{len(missing)} images are missing from {out} after sampling (first: {missing[0]}); "
                               f"run the same command again to finish them")
        if npz:
            summary.npz = npz_path(out)
            bar = _progress(job.total, f"packing {summary.npz}", "img", True)
            try:
                pack_npz(out, job.total, summary.npz, on_image=bar.update)
            finally:
                bar.close()
    return summary

