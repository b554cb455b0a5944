"""The few torch.distributed steps a sharded sampling job needs, and nothing when not under torchrun."""
from __future__ import annotations

import os
from datetime import timedelta
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


_CLOSINGS = 0  # process groups this process has closed


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

    def close(self, clean: bool = True, timeout: timedelta = timedelta(minutes=10)) -> None:
        """Tear the group down on every rank together. A two-process gloo run sometimes lost rank 1 to
        ``terminate called without an active exception`` just after rank 0, which finishes last (it packs the
        .npz), closed its connections (3 of the first 45 runs on a 2-core machine, and once in CI; no backtrace was
        caught, so the cause is inferred): gloo apparently does not survive a peer closing while this process
        still handles the last collective's traffic or is already exiting. So two barriers on the rendezvous store, which outlives the group: no rank closes before every
        rank is past its last collective, and none exits before every rank has closed. ``clean=False`` (this
        rank is failing): no barriers, since a peer may be blocked in a collective waiting for this rank;
        closing at once makes that collective fail now instead of after the barrier's timeout (and torchrun stops
        the other ranks when one fails, so a clean rank is not left waiting at a barrier)."""
        if not self.active:
            return
        if not clean:
            dist.destroy_process_group()
            self.active = False
            return
        store = dist.distributed_c10d._get_default_store()
        global _CLOSINGS
        _CLOSINGS += 1  # every rank closes its groups in the same order: the same keys, never a stale one
        prefix = f"var_fast/close/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{_CLOSINGS}"
        store_barrier(store, f"{prefix}/before", self.rank, self.world, timeout)
        dist.destroy_process_group()
        self.active = False
        store_barrier(store, f"{prefix}/after", self.rank, self.world, timeout)


def store_barrier(store: "dist.Store", name: str, rank: int, world: int, timeout: timedelta) -> None:
    """Every rank sets its key ``name/<rank>`` and waits for all ``world`` of them (a RuntimeError after
    ``timeout`` names the barrier)."""
    store.set(f"{name}/{rank}", b"1")
    try:
        store.wait([f"{name}/{r}" for r in range(world)], timeout)
    except Exception as err:  # the store's own timeout error type differs between torch versions
        raise RuntimeError(f"rank {rank}: not every one of the {world} processes reached {name!r} within "
                           f"{timeout} ({err})") from err
