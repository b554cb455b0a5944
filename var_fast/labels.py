"""Validation of class labels and sampling settings, shared by the Sampler, the patch and the CLI."""
from __future__ import annotations

import math
import operator
from typing import Optional, Sequence, Union

import torch

Labels = Union[None, int, Sequence[int], torch.Tensor]


def check_sampling_args(cfg: float, top_k: int, top_p: float) -> None:
    if isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not math.isfinite(cfg) or cfg < 0:
        raise ValueError(f"cfg must be a finite number >= 0 (1 is no guidance), got {cfg!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {top_k!r}")
    if not isinstance(top_p, (int, float)) or not (0.0 <= top_p <= 1.0):
        raise ValueError(f"top_p must be in [0, 1] (0 disables it), got {top_p!r}")


SEED_LIMIT = 1 << 63  # seeds are 0 <= seed < 2**63: every backend keys its generator with them unchanged


def check_seed(seed) -> None:
    """None (a random seed) or an integer in [0, 2**63)."""
    if seed is None:
        return
    try:
        value = operator.index(seed) if not isinstance(seed, bool) else None
    except TypeError:
        value = None
    if value is None or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"seed must be an integer with 0 <= seed < 2**63 (= {SEED_LIMIT}), got {seed!r}")


def resolve_labels(labels: Labels, num_classes: int, batch_size: Optional[int], device) -> Optional[torch.Tensor]:
    """int64 (B,) labels on ``device``; None when they must be drawn at random (then batch_size is B).

    -1 (or any negative int given as a single label) means the unconditional class, as upstream.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if labels is None:
        return None
    if isinstance(labels, bool):
        raise ValueError(f"labels must be an int, a list of ints or a LongTensor, got {labels!r}")
    if isinstance(labels, int):
        value = num_classes if labels < 0 else labels
        out = torch.full((batch_size or 1,), value, dtype=torch.long, device=device)
    else:
        if isinstance(labels, torch.Tensor):
            if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
                raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
            out = labels.reshape(-1).to(device=device, dtype=torch.long)
        else:
            items = list(labels)
            if not items or not all(isinstance(x, int) and not isinstance(x, bool) for x in items):
                raise ValueError(f"labels must be a non-empty list of ints, got {labels!r}")
            out = torch.tensor(items, dtype=torch.long, device=device)
        out = torch.where(out == -1, torch.full_like(out, num_classes), out)
        if batch_size is not None and batch_size != out.numel():
            raise ValueError(f"batch_size={batch_size} does not match the {out.numel()} labels given")
    if out.numel() == 0:
        raise ValueError("labels is empty")
    bad = (out < 0) | (out > num_classes)
    if bool(bad.any()):
        raise ValueError(f"label {int(out[bad][0])} is out of range: this checkpoint has classes 0..{num_classes - 1} "
                         f"(-1 or {num_classes} for the unconditional class)")
    return out
