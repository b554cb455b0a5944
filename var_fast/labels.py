"""Validation of class labels and sampling settings, shared by the Sampler, the patch and the CLI."""
from __future__ import annotations

import math
import operator
import re
from typing import List, Optional, Sequence, Tuple, Union

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


_MASK64 = (1 << 64) - 1


def derived_seed(seed: int, index: int) -> int:
    """A seed in [0, 2**63) per (seed, index): splitmix64 of the pair. Streams derived from one seed (a batch's,
    an image's) stay in the range every seed must be in, whatever the seed, and differ from other seeds'."""
    z = (seed * 0xD1B54A32D192ED03 + (index + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & (SEED_LIMIT - 1)


# ---- classes on the command line: one syntax for every command ------------------------------------
def parse_classes(specs: Sequence[str] | str, num_classes: Optional[int] = None) -> Tuple[int, ...]:
    """"0-999", "1,5,7", "0-9,20" (or several such arguments: "207 360") -> class labels in the order given.
    With ``num_classes`` None only the syntax is checked (before a model is loaded)."""
    text = specs if isinstance(specs, str) else ",".join(specs)
    classes: List[int] = []
    for part in filter(None, text.replace(" ", ",").split(",")):
        m = re.fullmatch(r"(-?\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"--classes: cannot read {part!r}; use ranges like 0-999 and lists like 1,5,7")
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        if low < 0:
            raise ValueError(f"class {low} is out of range: classes are 0 or more")
        if high < low:
            raise ValueError(f"--classes: range {part} is empty (write it low-high)")
        if num_classes is not None and high >= num_classes:
            raise ValueError(f"class {max(low, num_classes)} is out of range: this model has classes "
                             f"0..{num_classes - 1}")
        classes.extend(range(low, high + 1))
    if not classes:
        raise ValueError("--classes: no class given")
    if len(set(classes)) != len(classes):
        repeated = next(c for c in classes if classes.count(c) > 1)
        raise ValueError(f"--classes: class {repeated} is listed twice")
    return tuple(classes)


def format_classes(classes: Sequence[int]) -> str:
    """The shortest ``parse_classes`` text for ``classes``: ascending runs as ranges ("0-999", "1,5,7")."""
    parts, i = [], 0
    while i < len(classes):
        j = i
        while j + 1 < len(classes) and classes[j + 1] == classes[j] + 1:
            j += 1
        parts.append(f"{classes[i]}-{classes[j]}" if j > i else str(classes[i]))
        i = j + 1
    return ",".join(parts)


def resolve_labels(labels: Labels, num_classes: int, batch_size: Optional[int], device) -> Optional[torch.Tensor]:
    """int64 (B,) labels on ``device``; None when they must be drawn at random (then batch_size is B).

    -1 (or ``num_classes``) is the unconditional class, as upstream; other negative labels are refused.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if labels is None:
        return None
    what = "labels must be an int, a non-empty list of ints or an integer tensor"
    if isinstance(labels, (bool, str, bytes)):
        raise ValueError(f"{what}, got {labels!r}")
    if not isinstance(labels, torch.Tensor):
        try:  # an int, or an integer scalar such as numpy.int64
            labels = operator.index(labels)
        except TypeError:
            pass
    if isinstance(labels, int):
        out = torch.full((batch_size or 1,), labels, dtype=torch.long, device=device)
    else:
        if isinstance(labels, torch.Tensor):
            if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
                raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
            out = labels.reshape(-1).to(device=device, dtype=torch.long)
        else:
            try:
                items = list(labels)
            except TypeError:  # a float, or anything else that is neither a label nor a sequence of them
                raise ValueError(f"{what}, got {labels!r}") from None
            if not items or not all(isinstance(x, int) and not isinstance(x, bool) for x in items):
                raise ValueError(f"{what}, got {labels!r}")
            out = torch.tensor(items, dtype=torch.long, device=device)
        if batch_size is not None and batch_size != out.numel():
            raise ValueError(f"batch_size={batch_size} does not match the {out.numel()} labels given")
    if out.numel() == 0:
        raise ValueError("labels is empty")
    out = torch.where(out == -1, torch.full_like(out, num_classes), out)
    bad = (out < 0) | (out > num_classes)
    if bool(bad.any()):
        raise ValueError(f"label {int(out[bad][0])} is out of range: this checkpoint has classes 0..{num_classes - 1} "
                         f"(-1 or {num_classes} for the unconditional class)")
    return out
