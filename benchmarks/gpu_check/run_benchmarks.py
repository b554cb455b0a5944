"""Stage 4, in its own process: every benchmark in one process, one JSON line per measurement
appended to the records file as soon as it is taken (a run stopped at its time limit keeps them;
the report copies them into OUT/report.json).

    python -m benchmarks.gpu_check.run_benchmarks --records FILE --deadline EPOCH_S [--cpu-smoke] [--models d16,d30]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List

import torch

from .clock import Deadline

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


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--records", required=True, help="JSON-lines file the measurements are appended to")
    p.add_argument("--deadline", type=float, required=True, help="epoch seconds at which to stop starting cases")
    p.add_argument("--cpu-smoke", action="store_true")
    p.add_argument("--models", default="d16,d20,d24,d30,d36")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--upstream", default=None)
    p.add_argument("--skip", default="", help="sections to leave out: ops,latency,sampler")
    a = p.parse_args(argv)
    from . import ops_bench, sampler_bench
    from .upstream import Upstream
    smoke = a.cpu_smoke
    device = torch.device("cpu" if smoke else "cuda")
    deadline = Deadline(a.deadline)
    rec = Recorder(a.records)
    models = ["tiny"] if smoke else [m for m in a.models.split(",") if m]
    batches = [1] if smoke else _ints(a.batches)
    skip = set(a.skip.split(","))
    # bf16 on the GPU; float32 on the CPU, where bf16 matmuls and convolutions are emulated and slow
    dtype = torch.float32 if smoke else torch.bfloat16
    peak = ops_bench.peak_matmul(rec, device.type, deadline, n=256 if smoke else 8192, dtype=dtype)
    if "ops" not in skip:
        ops_bench.sampling(rec, device.type, deadline, [1, 64] if smoke else [1, 256, 16384, 87040])
        shapes = ops_bench.attention_shapes(models if smoke else ["d16", "d30", "d36"], batch=2 if smoke else 16)
        ops_bench.attention(rec, device.type, deadline, shapes, dtype)
        ops_bench.quantization(rec, device.type, deadline, [(2, "256px")] if smoke else [(64, "256px"), (64, "512px")])
    if "latency" not in skip:  # batch-1 latency per scale and the kernel count (README, "Batch-1 latency")
        from . import latency_bench
        latency_bench.run(rec, models[:1] if smoke else [m for m in ("d16", "d30") if m in models] or models[:1],
                          device, dtype, deadline, reps=1 if smoke else 5)
    if "sampler" not in skip:
        upstream = None
        if a.upstream:
            try:
                upstream = Upstream(a.upstream)
            except Exception as err:
                rec.add("upstream_check", case={}, impl="upstream", status="refused",
                        reason=f"cannot import upstream from {a.upstream}: {type(err).__name__}: {err}")
        estimator = sampler_bench.Estimator()
        for name in models:
            sampler_bench.run_model(rec, name, batches, device, dtype, deadline, estimator, peak, upstream,
                                    reps=1 if smoke else 3)
    rec.add("done", case={}, impl="-", status="ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
