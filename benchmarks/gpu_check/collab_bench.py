"""Collaborative decoding (CoDe) in the GPU check: a random-weight drafter/refiner pair with the
published shapes (d30 drafts, d16 refines) at N = 8 and 6 drafted scales and each batch size, against
the drafter alone, fast backend, in the same process. Timed as CoDe's README times it: the transformer
loop with sampling and the quantizer updates, not the VQVAE decode. Sampling as CoDe samples: cfg 4,
top-k 600, top-p 0.95, temperature 1.1 on the first 7 scales and 1.0 after.

With ``--code DIR`` (a czg1225/CoDe checkout) CoDe's own draft + refine runs on the same weights too, after
its greedy tokens matched var_fast's reference backend's (else "refused" with where they differ); that
comparison times both with the VQVAE decode (CoDe's refine returns images).

In the CPU modes the pair is "tiny" drafting and "tiny-refiner" refining (4 scales: N = 3 and 2)."""
from __future__ import annotations

import gc
from typing import List, Optional, Tuple

import torch

import var_fast
from var_fast.schedules import code_temperature

from .clock import Deadline
from .random_models import build, configs
from .timing import measure

GPU_PAIR = ("d30", "d16", (8, 6))
CPU_PAIR = ("tiny", "tiny-refiner", (3, 2))
ALONE = "drafter alone"
FAST, FAST_DECODED, CODE = "fast", "fast, decode included", "CoDe (its code)"


def pair_cases(smoke: bool) -> Tuple[str, str, Tuple[int, ...]]:
    """(drafter, refiner, the N values) the check runs."""
    return CPU_PAIR if smoke else GPU_PAIR


def run(rec, device: torch.device, dtype: torch.dtype, deadline: Deadline, batches: List[int], smoke: bool,
        reps: int = 5, code=None) -> None:
    """``code``: a ``code_upstream.CoDeUpstream`` (``--code DIR``) or None."""
    drafter_name, refiner_name, steps = pair_cases(smoke)
    pair = f"{drafter_name}+{refiner_name}"
    cases = [(b, n) for b in batches for n in (None,) + tuple(steps)]

    def case(batch: int, n: Optional[int]) -> dict:
        return dict(pair=pair, batch=batch, draft_steps=ALONE if n is None else n,
                    dtype=str(dtype).replace("torch.", ""))

    if deadline.passed():
        for b, n in cases:
            rec.add("left_out", case=dict(case(b, n), section="collab"), impl="-", status="deadline")
        return
    try:
        drafter, vae = build(drafter_name, device)
        refiner, _ = build(refiner_name, device, seed=1)
        alone = var_fast.Sampler(drafter, vae, device=device, dtype=dtype, backend="fast")
        paired = var_fast.Sampler(drafter, vae, device=device, dtype=dtype, backend="fast", refiner=refiner)
    except Exception as err:  # e.g. the extension did not build, or out of memory: the rest still runs
        rec.add("collab", case=dict(pair=pair), impl="fast", status="error", error=f"{type(err).__name__}: {str(err)[:200]}")
        return
    var_cfg, _ = configs(drafter_name)
    S = len(var_cfg.patch_nums)
    settings = dict(cfg=4.0, top_k=min(600, var_cfg.vocab_size // 2), top_p=0.95, temperature=code_temperature(S))
    theirs, verdicts = None, {}
    if code is not None:
        try:
            theirs = code.build(drafter, refiner, vae)
            ref32 = var_fast.Sampler(drafter, vae, device=device, dtype=torch.float32, backend="reference",
                                     refiner=refiner)
            for n in steps:
                verdicts[n] = code.greedy_check(*theirs, ref32, torch.arange(2, device=device) % var_cfg.num_classes, n)
        except Exception as err:
            from .upstream import Verdict
            verdicts = {n: Verdict(False, f"CoDe's code failed to build or run: {type(err).__name__}: {str(err)[:200]}")
                        for n in steps}
        for n, v in verdicts.items():
            rec.add("code_check", case=dict(pair=pair, draft_steps=n), impl=CODE, status="ok" if v.ok else "refused",
                    reason=v.reason, differing=v.differing, total=v.total)
    for batch, n in cases:
        sampler = alone if n is None else paired
        fast = sampler._fast_sampler()
        labels = torch.arange(batch, device=device) % var_cfg.num_classes
        kw = dict(seed=0, **settings, **sampler._fast_pair(n))
        runs = {FAST: lambda: fast.sample(labels, **kw)}
        if n is not None and theirs is not None and verdicts.get(n) is not None and verdicts[n].ok:
            runs[FAST_DECODED] = lambda: paired.sample(labels, seed=0, draft_steps=n, **settings)
            runs[CODE] = lambda: code.sample(*theirs, labels, dtype, n, **settings)
        for impl, fn in runs.items():
            if deadline.passed():
                rec.add("collab", case=case(batch, n), impl=impl, status="deadline")
                continue
            _measure(rec, case(batch, n), impl, fn, batch, device, deadline, reps,
                     dict(settings, temperature=list(settings["temperature"])))


def _measure(rec, case: dict, impl: str, fn, batch: int, device: torch.device, deadline: Deadline, reps: int,
             settings: dict) -> None:
    try:
        resident = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            resident = torch.cuda.memory_allocated(device)
        m = measure(fn, device.type, reps=reps, warmup=1, deadline=deadline)
        out = dict(status="ok", latency_s=m["median_s"], runs=m["runs"], images_per_s=batch / m["median_s"])
        if device.type == "cuda":
            out["peak_memory_gib"] = (torch.cuda.max_memory_allocated(device) - resident) / 2 ** 30
        rec.add("collab", case=case, impl=impl, settings=settings, **out)
    except torch.cuda.OutOfMemoryError:
        rec.add("collab", case=case, impl=impl, status="out of memory")
    except Exception as err:
        rec.add("collab", case=case, impl=impl, status="error", error=f"{type(err).__name__}: {str(err)[:200]}")
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
