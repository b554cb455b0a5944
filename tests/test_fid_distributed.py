"""var_fast.fid.distributed: the store barriers around the process group's teardown (the torchrun run itself is
tests/test_fid_sampling.py::test_two_processes_under_torchrun_write_identical_files)."""
import threading
from datetime import timedelta

import pytest
import torch.distributed as dist

from var_fast.fid.distributed import ProcessGroup, store_barrier


def test_barrier_returns_once_every_rank_has_arrived():
    store = dist.HashStore()
    arrived = []

    def rank(r):
        store_barrier(store, "b", r, 3, timedelta(seconds=30))
        arrived.append(r)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    threads[0].join(0.3)
    assert arrived == []  # ranks 0 and 1 wait for rank 2
    rank(2)
    for t in threads:
        t.join(30)
    assert sorted(arrived) == [0, 1, 2]


def test_barrier_names_itself_when_a_rank_never_arrives():
    store = dist.HashStore()
    with pytest.raises(RuntimeError, match=r"rank 0: not every one of the 2 processes reached 'var_fast/x/before'"):
        store_barrier(store, "var_fast/x/before", 0, 2, timedelta(milliseconds=200))


def test_barriers_of_another_name_do_not_count():
    """Keys of an earlier barrier (another close of the same store) never let a later one through."""
    store = dist.HashStore()
    store.set("var_fast/close/0/1/before/1", b"1")
    with pytest.raises(RuntimeError):
        store_barrier(store, "var_fast/close/0/2/before", 0, 2, timedelta(milliseconds=200))


def test_single_process_group_closes_without_a_store(monkeypatch):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    import torch
    group = ProcessGroup(torch.device("cpu"))
    assert not group.active
    group.close()  # nothing to tear down, no store asked for
    assert (group.rank, group.world) == (0, 1)


class RecordingStore:
    """A one-rank store that records what close() asks of it."""

    def __init__(self, calls):
        self.calls, self.keys = calls, set()

    def set(self, key, value):
        self.calls.append(("set", key))
        self.keys.add(key)

    def wait(self, keys, timeout):
        assert set(keys) <= self.keys
        self.calls.append(("wait", tuple(keys)))


@pytest.mark.parametrize("clean", [True, False])
def test_close_puts_barriers_around_the_teardown_only_when_clean(monkeypatch, clean):
    import var_fast.fid.distributed as distributed
    calls = []
    monkeypatch.setattr(distributed.dist.distributed_c10d, "_get_default_store", lambda: RecordingStore(calls))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append(("destroy",)))
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    monkeypatch.setattr(distributed, "_CLOSINGS", 4)
    group = object.__new__(ProcessGroup)
    group.rank, group.world, group.active = 0, 1, True
    group.close(clean)
    if clean:
        assert calls == [("set", "var_fast/close/2/5/before/0"), ("wait", ("var_fast/close/2/5/before/0",)),
                         ("destroy",),
                         ("set", "var_fast/close/2/5/after/0"), ("wait", ("var_fast/close/2/5/after/0",))]
    else:  # a failing rank closes at once: a peer blocked in a collective then fails instead of waiting
        assert calls == [("destroy",)]
    assert not group.active
    calls.clear()
    group.close(clean)  # closing twice does nothing
    assert calls == []
