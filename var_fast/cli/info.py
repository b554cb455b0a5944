"""``var-fast info``: version and build of the native kernels, as JSON; with ``--model infinity-2b`` (or another
Infinity name) the estimated peak GPU memory of each memory option at that model's shapes, as JSON."""
from __future__ import annotations

import json


def add_info_parser(sub) -> None:
    from var_fast.hub import INFINITY_MODEL_NAMES
    p = sub.add_parser("info", help="print version and native build information (--model: memory estimates)",
                       description="Print, as JSON, var_fast's version, the torch version, whether the native "
                                   "extension loads (and why not), and whether it has CUDA kernels and for which "
                                   "GPU architectures. With --model NAME (an Infinity model), print instead the "
                                   "estimated peak GPU memory per option (weights dtype, T5 encoder kept / freed / "
                                   "on the CPU) and batch size, computed from the model's shapes: nothing is "
                                   "downloaded (formulas: docs/infinity.md#memory).")
    p.add_argument("--model", choices=list(INFINITY_MODEL_NAMES), default=None,
                   help="an Infinity model: print memory estimates at its shapes")
    p.add_argument("--aspect-ratio", default="1.0", help="height/width of the schedule estimated (default: 1)")
    p.add_argument("--pixels", default=None, choices=["0.06M", "0.25M", "0.60M", "1M"],
                   help="pixel budget of the schedule estimated (default: the model's)")


def run_info(args) -> int:
    if getattr(args, "model", None) is not None:
        from var_fast.hub import INFINITY_MODEL_NAMES
        from var_fast.infinity.memory import published_shapes, report
        from var_fast.infinity.sampling_args import check_aspect_ratio
        from var_fast.infinity.schedules import scale_schedule
        check_aspect_ratio(args.aspect_ratio)
        schedule = scale_schedule(args.aspect_ratio, args.pixels or INFINITY_MODEL_NAMES[args.model][2])
        print(json.dumps(report(published_shapes(args.model), schedule), indent=2))
        return 0
    import var_fast
    print(json.dumps(var_fast.build_info(), indent=2))
    return 0
