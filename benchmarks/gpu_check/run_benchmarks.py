"""Stage 4, in its own process: every benchmark in one process, one JSON line per measurement
appended to the records file as soon as it is taken (a run stopped at its time limit keeps them;
the report copies them into OUT/report.json).

    python -m benchmarks.gpu_check.run_benchmarks --records FILE --deadline EPOCH_S [--cpu-smoke] [--models d16,d30]

Order (``plan``): the headline cases (--headline, default d16 batch 1 and d30 batch 64, each against
the reference backend and upstream), then the op tables, then the rest; a case the deadline leaves
out is recorded as left out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Tuple

import torch

from .clock import Deadline

# the numbers a cut run must still have: the smallest model at batch 1 and the large one at batch 64
HEADLINE = "d16:1,d30:64"


class Recorder:
    def __init__(self, path: str):
        self.file = open(path, "a")

    def add(self, section: str, **fields) -> None:
        record = dict(section=section, t=round(time.time(), 2), **fields)
        self.file.write(json.dumps(record, default=str) + "\n")
        self.file.flush()
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in fields.items() if k != "case"}
        print(f"[bench] {section} {fields.get('case', '')} {shown}", flush=True)


def _ints(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x]


def parse_headline(text: str) -> List[Tuple[str, int]]:
    """"d16:1,d30:64" -> [("d16", 1), ("d30", 64)]."""
    pairs = []
    for item in filter(None, text.split(",")):
        model, _, batch = item.partition(":")
        if not batch:
            raise ValueError(f"--headline items are MODEL:BATCH, got {item!r}")
        pairs.append((model, int(batch)))
    return pairs


def plan(models: List[str], batches: List[int], headline: List[Tuple[str, int]], ops: bool = True,
         sampler: bool = True) -> List[Tuple[str, str, List[int]]]:
    """The order the cases run in, so that a run cut by its budget still has the headline numbers:
    ("sampler", model, batches) for each headline case among the chosen models and batches, then
    ("ops", "", []) (the op tables), then every model's other batch sizes."""
    head = [(m, b) for m, b in headline if m in models and b in batches] if sampler else []
    steps = [("sampler", m, [b]) for m, b in head]
    if ops:
        steps.append(("ops", "", []))
    if sampler:
        for m in models:
            rest = [b for b in batches if (m, b) not in head]
            if rest:
                steps.append(("sampler", m, rest))
    return steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--records", required=True, help="JSON-lines file the measurements are appended to")
    p.add_argument("--deadline", type=float, required=True, help="epoch seconds at which to stop starting cases")
    p.add_argument("--cpu-smoke", action="store_true", help="on the CPU (tiny models unless --models is given)")
    p.add_argument("--models", default="d16,d20,d24,d30,d36")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--headline", default=HEADLINE, help="MODEL:BATCH cases run first, before the op tables")
    p.add_argument("--upstream", default=None)
    p.add_argument("--code", default=None, help="a czg1225/CoDe checkout (the CoDe pair cases against its own code)")
    p.add_argument("--skip", default="", help="sections to leave out: ops,latency,sampler,collab")
    a = p.parse_args(argv)
    from . import ops_bench, sampler_bench
    from .upstream import Upstream
    smoke = a.cpu_smoke
    device = torch.device("cpu" if smoke else "cuda")
    deadline = Deadline(a.deadline)
    rec = Recorder(a.records)
    models = [m for m in a.models.split(",") if m]
    batches = _ints(a.batches)
    skip = set(a.skip.split(","))
    # bf16 on the GPU; float32 on the CPU, where bf16 matmuls and convolutions are emulated and slow
    dtype = torch.float32 if smoke else torch.bfloat16
    steps = plan(models, batches, parse_headline(a.headline), "ops" not in skip, "sampler" not in skip)
    rec.add("plan", case={}, impl="-", status="ok", steps=steps)
    peak = ops_bench.peak_matmul(rec, device.type, deadline, n=256 if smoke else 8192, dtype=dtype)
    upstream = None
    if a.upstream and "sampler" not in skip:
        try:
            upstream = Upstream(a.upstream)
        except Exception as err:
            rec.add("upstream_check", case={}, impl="upstream", status="refused",
                    reason=f"cannot import upstream from {a.upstream}: {type(err).__name__}: {err}")
    latency_done = []

    def run_latency():  # batch-1 latency per scale and the kernel count (README, "Batch-1 latency"), once
        if "latency" in skip or latency_done:
            return
        latency_done.append(True)
        from . import latency_bench
        latency_bench.run(rec, models[:1] if smoke else [m for m in ("d16", "d30") if m in models] or models[:1],
                          device, dtype, deadline, reps=1 if smoke else 5)

    estimator, verdicts = sampler_bench.Estimator(), {}
    for kind, model, step_batches in steps:
        if kind == "ops":
            run_latency()
            ops_bench.sampling(rec, device.type, deadline, [1, 64] if smoke else [1, 256, 16384, 87040])
            shapes = ops_bench.attention_shapes(models[:1] if smoke else ["d16", "d30", "d36"], batch=2 if smoke else 16)
            ops_bench.attention(rec, device.type, deadline, shapes, dtype)
            ops_bench.quantization(rec, device.type, deadline, [(2, "256px")] if smoke else [(64, "256px"), (64, "512px")])
        else:
            sampler_bench.run_model(rec, model, step_batches, device, dtype, deadline, estimator, peak, upstream,
                                    reps=1 if smoke else 3, verdicts=verdicts)
    run_latency()  # when the op tables were skipped
    if "collab" not in skip:  # CoDe: a drafter/refiner pair against the drafter alone, after everything else
        from . import collab_bench
        code = None
        if a.code:
            try:
                from .code_upstream import CoDeUpstream
                code = CoDeUpstream(a.code)
            except Exception as err:
                rec.add("code_check", case={}, impl="CoDe (its code)", status="refused",
                        reason=f"cannot import CoDe from {a.code}: {type(err).__name__}: {err}")
        collab_bench.run(rec, device, dtype, deadline, [1, 2] if smoke else [1, 64], smoke, reps=1 if smoke else 5,
                         code=code)
    rec.add("done", case={}, impl="-", status="ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
