"""Per-scale sampling schedules: ``top_k`` and ``temperature`` as one number or one value per scale.

CoDe samples with top-k 600 at every scale and a temperature of 1.1 on the first 7 scales, 1.0 after
(``CODE_TOP_K`` / ``code_temperature``); any VAR model may use such schedules.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

Schedule = Union[int, float, Sequence[Union[int, float]]]


def _check_top_k(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 0


def _check_temperature(value) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0)


def _check_guidance(value) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0)


_RULES = {
    "top_k": (_check_top_k, "an integer >= 0 (0 disables it)"),
    "temperature": (_check_temperature, "a finite number > 0 (1 leaves the logits as they are)"),
    "guidance": (_check_guidance, "a finite number >= 0 (0: the conditional logits alone)"),
}


def per_scale(name: str, value: Schedule, num_scales: int) -> Tuple:
    """``value`` (one number, or a list/tuple of ``num_scales`` numbers) -> a tuple of one value per scale.

    ``name`` is "top_k", "temperature" or "guidance"; a bad value raises ValueError naming the option and the scale.
    """
    check, rule = _RULES[name]
    if isinstance(value, (list, tuple)):
        if len(value) != num_scales:
            raise ValueError(f"{name} must be one value or one per scale ({num_scales} scales), got {len(value)} values")
        for si, v in enumerate(value):
            if not check(v):
                raise ValueError(f"{name} at scale {si} must be {rule}, got {v!r}")
        return tuple(value)
    if not check(value):
        raise ValueError(f"{name} must be {rule}, or a list of one such value per scale; got {value!r}")
    return (value,) * num_scales


def parse_schedule(name: str, text: str) -> Schedule:
    """CLI form: "600" or "1.1,1.1,1.0,..." (comma-separated, one per scale)."""
    cast = int if name == "top_k" else float
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [cast(p) for p in parts]
    except ValueError:
        kind = "integers" if cast is int else "numbers"
        raise ValueError(f"{name} must be one value or comma-separated {kind} (one per scale), got {text!r}") from None
    return values[0] if len(values) == 1 else values


CODE_TOP_K = 600


def code_temperature(num_scales: int) -> Tuple[float, ...]:
    """CoDe's temperature schedule: 1.1 on the first 7 scales, 1.0 after."""
    return tuple(1.1 if si < 7 else 1.0 for si in range(num_scales))
