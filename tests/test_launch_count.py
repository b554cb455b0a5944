"""The guard on batch-1 latency: kernel launches of the fast loop per block and scale on the CUDA code
path, counted without a GPU.

At batch 1 a VAR step is bound by kernel launches, not arithmetic (README, "Batch-1 latency"), so the
number of kernels per block and scale is held here. The loop runs on the emulated CUDA kernels (the CUDA
code path: native attention, the kernel path's FFN epilogue) under the PyTorch profiler, and
benchmarks/gpu_check/launch_count.py counts, inside each profiler region of the loop:
  * every emulated kernel launch of a var_fast op (each `launch()` of var_fast/launch.cuh is an event);
  * every ATen op that launches a kernel on CUDA (mm/addmm, elementwise ops, copies, ...): 1 each, not
    looked into; views, allocations and metadata ops count 0; composite ops (linear, matmul, to,
    contiguous, reshape, ...) count what the ops they call count.
The expected numbers are exact: a change that adds a launch fails here (lower them when a change
removes one). `make gpu-check` reports the count the CUDA profiler sees on a GPU, which also includes
what the emulated count cannot know (a GEMM that cuBLAS splits in two kernels).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.gpu_check import launch_count
from model_factory import make_models
from var_fast import ops
from var_fast.fast_sampler import FastSampler

# per block and scale: QKV GEMM, qkv_to_cache, attention, proj GEMM (+bias), gated_residual_adaln
# (residual + second modulation), fc1 GEMM, bias_gelu, fc2 GEMM (+bias), gated_residual_adaln (residual +
# the next block's, or the head's, modulation)
PER_BLOCK = 9
ISSUE_25_BOUND = 10  # the bound issue 25 set; PER_BLOCK may only go down from here
# scale 0: adaln_modulate of the start tokens; later scales: word-embedding GEMM (+bias), level/position
# add writing both CFG halves, adaln_modulate
SCALE_INPUT_FIRST, SCALE_INPUT_LATER = 1, 3
HEAD = 1  # head GEMM (+bias)
# outside the transformer pass, per scale: the CFG sampling op (1 kernel); the quantizer step (its fused
# lookup/upsample/Phi/accumulate kernel, the area downsample except on the last scale, and the Phi
# weight's re-layout, zeros + copy, which the op redoes on every call); the previous map made contiguous
# for the pass (later scales; on a GPU with graphs, the copy into the graph's static input instead)
SAMPLING = 1
QUANT_STEP = {"not_last": 4, "last": 3}


def _count(name, B=1):
    var, vae = make_models(name)
    sampler = FastSampler(var, vae, cuda_graphs=False)
    labels = torch.arange(B) % var.num_classes
    counts = launch_count.count_emulated(lambda: sampler.sample(labels, seed=0, cfg=1.5, top_k=1))
    return var, counts


@pytest.mark.emu
@pytest.mark.parametrize("name", ["d2", "d3_shared"])
def test_kernels_per_block_and_scale(emulated, name):
    var, counts = _count(name)
    depth, S = len(var.blocks), len(var.patch_nums)
    blocks = counts["var_fast.block"]
    assert len(blocks) == depth * S
    assert max(blocks) <= ISSUE_25_BOUND
    assert blocks == [PER_BLOCK] * (depth * S), (
        f"kernel launches per block and scale changed: {sorted(set(blocks))} instead of {PER_BLOCK}. "
        "If a change removed launches, lower PER_BLOCK; a change that adds one needs a reason (README, Batch-1 latency)")
    assert counts["var_fast.scale_input"] == [SCALE_INPUT_FIRST] + [SCALE_INPUT_LATER] * (S - 1)
    assert counts["var_fast.head"] == [HEAD] * S
    # nothing in a scale's pass outside the counted parts
    per_scale_blocks = [sum(blocks[si * depth:(si + 1) * depth]) for si in range(S)]
    assert counts["var_fast.scale_graph"] == [i + b + h for i, b, h in zip(
        counts["var_fast.scale_input"], per_scale_blocks, counts["var_fast.head"])]


@pytest.mark.emu
def test_launches_outside_the_scale_pass(emulated):
    """Per scale outside the (graphed) pass: sampling, the quantizer step, and the next input's copy."""
    var, counts = _count("d2")
    S = len(var.patch_nums)
    outside = [a - b for a, b in zip(counts["var_fast.scale"], counts["var_fast.scale_graph"])]
    expected = [SAMPLING + QUANT_STEP["not_last"]] + [SAMPLING + QUANT_STEP["not_last"] + 1] * (S - 2) + \
        [SAMPLING + QUANT_STEP["last"] + 1]
    assert outside == expected


@pytest.mark.emu
def test_summary_of_a_batch_1_image(emulated):
    var, counts = _count("d2")
    summary = launch_count.summary(counts, len(var.blocks), len(var.patch_nums))
    assert summary["per_block_and_scale"] == PER_BLOCK
    assert summary["total"] >= sum(counts["var_fast.scale"]) + summary["per_call_setup"]


def _launches(fn):
    return launch_count.count_emulated(lambda: [fn()])["total"][0]


@pytest.mark.emu
def test_the_counting_rule(emulated):
    """The rule counts what launches a kernel on CUDA and nothing else (so the guard above can fail)."""
    x = torch.randn(2, 3, 64)
    w, b = torch.randn(32, 64), torch.randn(32)
    gamma = torch.randn(2, 1, 64)
    assert _launches(lambda: x.view(6, 64).transpose(0, 1)[0]) == 0
    assert _launches(lambda: x.reshape(6, 64).contiguous()) == 0  # already contiguous: nothing runs
    assert _launches(lambda: x.transpose(1, 2).contiguous()) == 1  # a copy kernel
    assert _launches(lambda: F.linear(x, w, b)) == 1  # addmm, one cuBLAS call
    assert _launches(lambda: F.linear(x, w)) == 1  # mm
    assert _launches(lambda: x * 2 + 1) == 2
    assert _launches(lambda: ops.gated_residual(x, x, gamma)) == 1  # an emulated kernel launch
    assert _launches(lambda: ops.gated_residual_adaln(x, x, gamma, gamma, gamma)) == 1
    assert _launches(lambda: ops.bias_gelu(x, x[0, 0])) == 1
