"""The few torch.distributed steps a sharded sampling job needs, and nothing when not under torchrun."""
from __future__ import annotations

import os
from typing import Any, List, Sequence

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def torchrun_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the environment torchrun sets; (0, 1, 0) otherwise."""
    if not launched_by_torchrun():
        return 0, 1, 0
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


class ProcessGroup:
    """The default process group when launched by torchrun (NCCL for CUDA devices, gloo on the CPU);
    a single-process stand-in with the same methods otherwise."""

    def __init__(self, device: torch.device):
        self.rank, self.world, self.local_rank = torchrun_ranks()
        self.device = device
        self.active = False
        if launched_by_torchrun():
            if device.type == "cuda":
                torch.cuda.set_device(device)
                dist.init_process_group("nccl", device_id=device)
            else:
                dist.init_process_group("gloo")
            self.active = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: Sequence[int]) -> List[int]:
        """Element-wise sum of integer counters over all ranks."""
        if not self.active:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.int64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.active:
            dist.destroy_process_group()
            self.active = False
