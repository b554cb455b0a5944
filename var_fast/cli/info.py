"""``var-fast info``: version and build of the native kernels, as JSON."""
from __future__ import annotations

import json


def add_info_parser(sub) -> None:
    sub.add_parser("info", help="print version and native build information",
                   description="Print, as JSON, var_fast's version, the torch version, whether the native "
                               "extension loads (and why not), and whether it has CUDA kernels and for which "
                               "GPU architectures.")


def run_info(args) -> int:
    import var_fast
    print(json.dumps(var_fast.build_info(), indent=2))
    return 0
