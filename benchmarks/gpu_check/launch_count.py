"""Kernel launches of the fast sampler per part of a scale, counted with the PyTorch profiler.

The fast loop marks its parts with profiler regions (var_fast/fast_sampler.py): ``var_fast.scale`` (one
scale of the loop), inside it ``var_fast.scale_graph`` (what a CUDA graph captures) made of
``var_fast.scale_input``, one ``var_fast.block`` per block and ``var_fast.head``; ``var_fast.call_setup``
is the per-call work before the first scale. Two ways to count what runs inside a region:

* ``count_emulated`` (no GPU; tests/test_launch_count.py): the loop runs on the emulated CUDA kernels
  (the CUDA code path, CPU tensors), and a region's count is, over its profiler event tree,
    - every emulated kernel launch (``var_fast_emu::kernel_launch``, recorded by var_fast/launch.cuh),
    - plus every ATen op that launches a kernel on CUDA: an ``aten::`` op counts 1 and is not looked
      into (a CPU addmm's internal copies are one cuBLAS call on CUDA), unless it is in ``TRANSPARENT``:
      views, allocation and metadata ops launch nothing themselves, and composite ops (linear, matmul,
      to, contiguous, reshape, ...) launch what their children launch, so their children are counted;
    - a var_fast_emu op is transparent too: it launches what its body launches. (On the CPU path, where
      the ops are ``var_fast::`` CPU ops, each op counts 1: the ops-per-block figure of the README.)
* ``count_cuda`` (``make gpu-check``): the device kernels the profiler attributes to the region's ops.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Dict, List

import torch

REGIONS = ("var_fast.call_setup", "var_fast.scale", "var_fast.scale_graph", "var_fast.scale_input",
           "var_fast.block", "var_fast.head")
EMULATED_LAUNCH = "var_fast_emu::kernel_launch"

# ATen ops that launch no kernel of their own on CUDA: views, allocation, metadata, and composites
# whose launches are those of the ops they call (counted through their children).
TRANSPARENT = frozenset("aten::" + name for name in (
    "empty", "empty_strided", "empty_like", "detach_", "new_empty", "new_empty_strided", "resize_", "view", "_unsafe_view",
    "reshape", "_reshape_alias", "as_strided", "expand", "expand_as", "unsqueeze", "squeeze", "transpose", "t",
    "permute", "select", "slice", "unbind", "split", "split_with_sizes", "chunk", "narrow", "detach", "alias",
    "lift_fresh", "resolve_conj", "resolve_neg", "view_as", "flatten", "unflatten", "contiguous", "to",
    "_to_copy", "clone", "linear", "matmul", "type_as", "result_type", "_has_compatible_shallow_copy_type",
    "is_nonzero", "numpy_T", "dropout", "_reshape_copy", "movedim", "swapaxes",
))


def _children(events) -> Dict[int, list]:
    kids = defaultdict(list)
    for e in events:
        if e.cpu_parent is not None:
            kids[id(e.cpu_parent)].append(e)
    return kids


def emulated_launches(event, kids) -> int:
    """Launches under one profiler event of an emulated run, by the rule of the module docstring."""
    name = event.name
    if name == EMULATED_LAUNCH:
        return 1
    if name.startswith("aten::") and name not in TRANSPARENT:
        return 1
    if name.startswith("var_fast::"):  # the CPU library's op (the CPU path): one op, as its CUDA kernel
        return 1
    return sum(emulated_launches(child, kids) for child in kids.get(id(event), ()))


def cuda_launches(event, kids) -> int:
    """Device kernels the profiler attributes to an event and everything it called."""
    return len(event.kernels) + sum(cuda_launches(child, kids) for child in kids.get(id(event), ()))


def _count(run: Callable[[], object], activities, counter) -> Dict[str, List[int]]:
    with torch.profiler.profile(activities=activities) as prof:
        run()
    events = [e for e in prof.events() if not getattr(e, "is_async", False)]
    kids = _children(events)
    counts: Dict[str, List[int]] = {name: [] for name in REGIONS}
    # region events in the order they started (scale by scale, block by block)
    for e in sorted(events, key=lambda e: e.time_range.start):
        if e.name in counts:
            counts[e.name].append(counter(e, kids))
    counts["total"] = [sum(counter(e, kids) for e in events if e.cpu_parent is None)]
    return counts


def count_emulated(run: Callable[[], object]) -> Dict[str, List[int]]:
    """Launches per region instance ({region: [count of each instance in order]}, plus "total") of
    ``run()`` on the emulated kernels (ops routed to var_fast_emu)."""
    return _count(run, [torch.profiler.ProfilerActivity.CPU], emulated_launches)


def count_cuda(run: Callable[[], object]) -> Dict[str, List[int]]:
    """The same on a GPU, from the CUDA kernels the profiler saw (run it with cuda_graphs=False: a
    replayed graph's kernels are not attributed to the ops that were captured)."""
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    return _count(run, acts, cuda_launches)


def summary(counts: Dict[str, List[int]], depth: int, scales: int) -> Dict[str, float]:
    """The numbers the README and the GPU report quote: per block and scale, per scale outside the
    blocks, per scale outside the graph, per call outside the scales, per image in all."""
    per_block = counts["var_fast.block"]
    in_graph = sum(counts["var_fast.scale_graph"])
    outside_graph = sum(counts["var_fast.scale"]) - in_graph
    return {
        "per_block_and_scale": sum(per_block) / max(1, depth * scales),
        "max_per_block": max(per_block, default=0),
        "per_scale_in_graph_outside_blocks": (in_graph - sum(per_block)) / max(1, scales),
        "per_scale_outside_graph": outside_graph / max(1, scales),
        "per_call_setup": sum(counts["var_fast.call_setup"]),
        "total": counts["total"][0],
    }
