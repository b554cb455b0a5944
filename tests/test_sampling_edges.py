"""Sampling at the exact boundaries of its keep rules: rows built so that a threshold's mass or count equals
its target exactly (weights that are exactly 1 in float32), where `>=` and `>` keep different tokens.
Written for the mutants of tests/emu/mutants.py that the broader tests of test_sampling.py let survive
(docs/mutation-testing.md); the semantics are those documented in csrc/include/var_fast/sampling.cuh.
"""
import pytest
import torch

from var_fast import ops

# exp(D) rounds to exactly 1.0f in the kernels' exp_nonpositive (|D| is below half an ulp of 1), yet D is
# a distinct, smaller value than 0: a second tie group of weight 1 per token.
D = -(2.0**-26)
ROWS = 64  # rows per call: a wrongly kept token is drawn with probability 1/2 in each


def _rows(values, device):
    return torch.tensor(values, dtype=torch.float32).to(device).expand(1, ROWS, len(values))


@pytest.mark.parametrize("cfg", [False, True], ids=["plain", "cfg"])
def test_top_p_mass_exactly_at_the_target_keeps_only_the_top_group(device, cfg):
    # weights 1, 1 (value 0) and 1, 1 (value D): kept mass 4, target c = 0.5 * 4 = 2 = the top group's
    # mass exactly. The rule keeps the largest threshold whose mass is >= c: the top group only.
    x = _rows([0.0, D, 0.0, D], device)
    if cfg:  # (1 + g) * x - g * x == x exactly for g = 1 (products and difference are exact)
        tokens = ops.sample_cfg_top_k_top_p(torch.cat([x, x]), 1.0, 0, 0.5, seed=11)
    else:
        tokens = ops.sample_top_k_top_p(x, 0, 0.5, seed=11)
    assert set(tokens.flatten().tolist()) == {0, 2}


def test_top_p_just_above_the_top_group_keeps_the_next_group(device):
    x = _rows([0.0, D, 0.0, D], device)
    tokens = ops.sample_top_k_top_p(x, 0, 0.5 + 2**-20, seed=12)
    assert set(tokens.flatten().tolist()) == {0, 1, 2, 3}


def test_top_k_count_exactly_at_k_keeps_only_the_top_group(device):
    x = _rows([D, 0.0, D, 0.0, -1.0], device)
    assert set(ops.sample_top_k_top_p(x, 2, 0.0, seed=13).flatten().tolist()) == {1, 3}
    assert set(ops.sample_top_k_top_p(x, 3, 0.0, seed=13).flatten().tolist()) <= {0, 1, 2, 3}
    assert {0, 2} <= set(ops.sample_top_k_top_p(x, 3, 0.0, seed=13).flatten().tolist())


# The row cache (keys and weights, 8 bytes a token) is used when 8 V + sizeof(BlockScratch) (144) + 1 KiB
# (the reserve per block) fits the opt-in shared memory of the (emulated) H100, 232448 bytes: V <= 28910.
# V = 29120 would not even fit without the reserve: the launch fails if it takes the cached path.
@pytest.mark.parametrize("V", [28910, 28911, 29120])
def test_rows_at_the_row_cache_limit_match_cpu(kernel_device, V):
    x = torch.randn(1, 2, V, generator=torch.Generator().manual_seed(V)) * 3
    for top_k, top_p in [(0, 0.0), (50, 0.9)]:
        want = torch.ops.var_fast.sample_top_k_top_p(x, top_k, top_p, V, 0)  # the CPU op
        got = ops.sample_top_k_top_p(x.to(kernel_device), top_k, top_p, seed=V)
        assert torch.equal(got.cpu(), want), (V, top_k, top_p)
