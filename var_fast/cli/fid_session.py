"""The process-group part of ``var-fast sample-fid`` shared by its VAR (classes) and Infinity (prompts) runs:
the CPU thread count fixed for the run, the job prepared and run by every rank, the summary printed once."""
from __future__ import annotations

import sys
from typing import Callable, Optional, Tuple

import torch


def announce_job(total: int, what: str, out: str, world: int, batch_size: int) -> None:
    print(f"[var_fast] sample-fid: {total} images ({what}) into {out}, {world} process{'es' if world > 1 else ''}, "
          f"batches of {batch_size}", file=sys.stderr)


def run_in_process_group(device: torch.device, cpu_threads: int, out: str, npz: bool,
                         prepare: Callable[[object], Tuple[object, object, Optional[dict]]]) -> int:
    """``prepare(group) -> (sampler, job, manifest)`` (the manifest on the main rank only), then the job on every
    rank (var_fast.fid.sampling.run_fid_job)."""
    from var_fast.fid.distributed import ProcessGroup
    from var_fast.fid.sampling import run_fid_job

    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads)  # the same numerics whatever the process count
    group = ProcessGroup(device)
    clean = False
    try:
        sampler, job, manifest = prepare(group)
        summary = run_fid_job(sampler, job, out, group, manifest, npz=npz)
        clean = True
    finally:
        group.close(clean)
        torch.set_num_threads(threads_before)
    if group.is_main:
        print(summary.line(), file=sys.stderr)
    return 0
