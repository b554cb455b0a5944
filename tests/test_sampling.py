"""sample_top_k_top_p / sample_cfg_top_k_top_p: fused CFG + top-k + top-p sampling, one Philox draw per row.

The semantics (keep rule, tie handling, draw) are documented in csrc/include/var_fast/sampling.cuh;
var_fast.reference.sampling holds the upstream filter (``filtered_probs``) and a float64 model of the
op (``sample_top_k_top_p_philox``). CPU and CUDA kernels run the same float32 operations in the same
order, so on CUDA the tokens are compared with the CPU op's for exact equality.
"""
import numpy as np
import pytest
import torch

from conftest import HAS_CUDA
from var_fast import ops
from var_fast.reference import sampling as ref

CUDA_ONLY = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def _randn(*shape, seed, std=2.0, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * std).to(device=device, dtype=dtype)


def _draws(device_name, n, n_emu):
    """n draws, or n_emu on the CUDA emulator (~100-1000 rows/s there); with the factor sqrt(n / n_emu) by
    which a total-variation bound grows when the draws shrink."""
    if device_name == "emu":
        return n_emu, (n / n_emu) ** 0.5
    return n, 1.0


def _counts(tokens, V):
    return torch.bincount(tokens.flatten().cpu(), minlength=V).double()


def _mass_greater(x, top_k):
    """For x (R, V): the probability (among the top-k survivors, float64) of the tokens whose logit is
    strictly larger than each token's, and the top-k keep mask."""
    x = x.double()
    V = x.shape[-1]
    keep = ref.top_k_top_p_keep_mask(x, top_k, 0.0)
    w = torch.where(keep, (x - x.amax(-1, keepdim=True)).exp(), torch.zeros_like(x))
    descending, order = x.sort(-1, descending=True)
    cumulative = w.gather(-1, order).cumsum(-1)
    n_greater = V - torch.searchsorted(descending.flip(-1).contiguous(), x.contiguous(), right=True)
    greater = torch.where(n_greater > 0, cumulative.gather(-1, (n_greater - 1).clamp(min=0)), torch.zeros_like(x))
    return greater / cumulative[..., -1:], keep


def _top_p_margin(x, top_k, top_p):
    """Per row of x (R, V): the smallest |mass of strictly larger tokens - top_p| over the kept tokens."""
    greater, keep = _mass_greater(x.reshape(-1, x.shape[-1]), top_k)
    return torch.where(keep, (greater - top_p).abs(), torch.full_like(greater, torch.inf)).amin(-1)


def _ambiguous_rows(x, top_k, top_p, seed, row_offset, rel=3e-6):
    """Rows (of x (R, V), float32 values) whose draw is decided within float32 rounding: u * kept mass
    within `rel` of a cumulative-sum boundary, or a token's top-p mass within `rel` of top_p."""
    x = x.double()
    keep = ref.top_k_top_p_keep_mask(x, top_k, top_p)
    w = torch.where(keep, (x - x.amax(-1, keepdim=True)).exp(), torch.zeros_like(x))
    cdf = w.cumsum(-1) / w.sum(-1, keepdim=True)
    u = ref.philox_uniform(seed, row_offset + torch.arange(x.shape[0]))
    ambiguous = ((cdf - u.unsqueeze(-1)).abs() < rel).any(-1)
    if 0 < top_p < 1:
        ambiguous |= _top_p_margin(x, top_k, top_p) < rel
    return ambiguous


# ---- 1. frequencies over 10^6 draws -----------------------------------------------------------------
N_DRAWS = 10**6
# The CUDA emulator runs ~20-60 rows/s: fewer draws there, with the bound scaled by sqrt(10^6 / n) (the
# total variation of an empirical distribution shrinks as 1/sqrt(n)). The emulated kernel's tokens are
# also compared with the CPU op's one for one (test_kernel_matches_cpu), which has the full 10^6 draws.
N_DRAWS_EMU = 300
TV_BOUND = 0.005
FREQ_V = 32
FREQ_CONFIGS = [  # (name, guidance (None: plain op), top_k, top_p)
    ("no_filter", None, 0, 0.0),
    ("top_k", None, 12, 0.0),
    ("top_p", None, 0, 0.8),
    ("top_k_top_p", None, 20, 0.9),
    ("cfg_top_k_top_p", 1.5, 24, 0.95),
]


@pytest.mark.parametrize("name,guidance,top_k,top_p", FREQ_CONFIGS, ids=[c[0] for c in FREQ_CONFIGS])
def test_frequencies_match_filtered_distribution(device, device_name, name, guidance, top_k, top_p):
    V = FREQ_V
    n = N_DRAWS_EMU if device_name == "emu" else N_DRAWS
    if guidance is None:
        row = _randn(1, 1, V, seed=11, std=1.5)
        mixed = row
        logits = row.to(device).expand(1, n, V)  # one row, n draws, no memory
        tokens = ops.sample_top_k_top_p(logits, top_k, top_p, seed=2024)
    else:
        halves = _randn(2, 1, V, seed=12, std=1.5)
        mixed = ref.cfg_mix(halves, guidance)
        logits = halves.to(device).expand(2, n, V)
        tokens = ops.sample_cfg_top_k_top_p(logits, guidance, top_k, top_p, seed=2024)
    assert tokens.shape == (1, n) and tokens.dtype == torch.int64
    expected = ref.filtered_probs(mixed, top_k, top_p).flatten()
    kept = int((expected > 0).sum())
    assert kept < V if (top_k or top_p) else kept == V  # the filters are active
    if top_k:
        assert kept <= top_k
    if top_p:
        assert _top_p_margin(mixed, top_k, top_p).item() > 1e-3  # no rounding question at the cut
    freq = _counts(tokens, V) / n
    assert freq[expected == 0].sum() == 0, "a filtered-out token was drawn"
    tv = 0.5 * (freq - expected).abs().sum().item()
    bound = TV_BOUND * (N_DRAWS / n) ** 0.5
    assert tv < bound, f"total variation {tv:.4f} over {n} draws (bound {bound:.4f})"


# ---- 2. the kept set: parity with the reference rule and the float64 model -----------------------------
PARITY_CONFIGS = [(0, 0.0), (1, 0.0), (10, 0.0), (0, 0.5), (0, 0.9), (50, 0.8), (900, 0.96), (7, 0.3)]


@pytest.mark.parametrize("V", [1, 37, 1000, 4096])
@pytest.mark.parametrize("top_k,top_p", PARITY_CONFIGS)
def test_tokens_match_float64_model(device, device_name, V, top_k, top_p):
    B, L = (3, 8) if device_name == "emu" else (3, 40)
    x = _randn(B, L, V, seed=V + top_k, std=3.0)
    got = ops.sample_top_k_top_p(x.to(device), top_k, top_p, seed=99, row_offset=5).cpu()
    want = ref.sample_top_k_top_p_philox(x, top_k, top_p, seed=99, row_offset=5)
    ambiguous = _ambiguous_rows(x.view(B * L, V), top_k, top_p, seed=99, row_offset=5).view(B, L)
    assert ambiguous.float().mean() < (0.2 if device_name == "emu" else 0.05)  # 24 rows on emu
    assert torch.equal(got[~ambiguous], want[~ambiguous])


@pytest.mark.parametrize("top_k,top_p", PARITY_CONFIGS)
def test_keep_rule_is_upstreams_without_ties(top_k, top_p):
    x = _randn(6, 5, 333, seed=3, std=3.0)
    assert torch.equal(ref.top_k_top_p_keep_mask(x, top_k, top_p), ref.filtered_probs(x, top_k, top_p) > 0)


@pytest.mark.parametrize("V", [37, 64])
@pytest.mark.parametrize("top_k,top_p", [(0, 0.0), (5, 0.0), (0, 0.7), (9, 0.85)])
def test_drawable_set_is_the_kept_set(device, device_name, V, top_k, top_p):
    if device_name == "emu":
        pytest.skip("160,000 draws are days of emulation; on emu the kernel's tokens equal the CPU op's "
                    "(test_kernel_matches_cpu), which passes this test")
    rows, draws = 4, 40000
    x = _randn(rows, 1, V, seed=V, std=0.7)  # flat enough that every kept token is drawn often
    keep = ref.top_k_top_p_keep_mask(x, top_k, top_p).view(rows, V)
    probs = ref.filtered_probs(x, top_k, top_p).view(rows, V)
    assert (probs[keep].min() * draws) > 30
    if top_p:
        assert _top_p_margin(x, top_k, top_p).min() > 1e-4  # no rounding question at the cut
    tokens = ops.sample_top_k_top_p(x.to(device).expand(rows, draws, V), top_k, top_p, seed=7)
    for r in range(rows):
        drawn = _counts(tokens[r], V) > 0
        assert torch.equal(drawn, keep[r])


def test_top_k_keeps_every_tie_at_the_kth_value(device, device_name):
    V = 20
    n, widen = _draws(device_name, 200000, 3000)
    x = torch.full((V,), -2.0)
    x[:6] = torch.tensor([5.0, 4.0, 3.0, 3.0, 3.0, 3.0])
    x[10] = 3.0  # a tied token after lower ones
    tokens = ops.sample_top_k_top_p(x.to(device).expand(1, n, V), 3, 0.0, seed=1)
    counts = _counts(tokens, V)
    kept = torch.zeros(V, dtype=torch.bool)
    kept[[0, 1, 2, 3, 4, 5, 10]] = True
    assert torch.equal(counts > 0, kept)
    expected = ref.top_k_top_p_keep_mask(x, 3).double() * (x.double() - 5).exp()
    expected /= expected.sum()
    assert 0.5 * (counts / counts.sum() - expected).abs().sum() < 0.01 * widen


def test_top_p_keeps_the_whole_tied_group_at_the_threshold(device, device_name):
    V = 12
    x = torch.tensor([2.0, 1.0, 1.0, 1.0] + [-1.0] * (V - 4))
    p = x.double().softmax(-1)
    top_p = p[0].item() + 0.5 * p[1].item()  # upstream's sort would keep only part of the tied group
    n, widen = _draws(device_name, 100000, 3000)
    tokens = ops.sample_top_k_top_p(x.to(device).expand(1, n, V), 0, top_p, seed=3)
    counts = _counts(tokens, V)
    assert torch.equal(counts > 0, torch.arange(V) < 4)
    assert torch.equal(ref.top_k_top_p_keep_mask(x, 0, top_p), torch.arange(V) < 4)
    assert counts[1:4].min() > (1 - 0.1 * widen) * counts[1:4].max()  # the tied tokens are equally likely


def test_signed_zeros_are_one_value(device, device_name):
    x = torch.tensor([1.0, 0.0, -0.0, -1.0, -3.0])
    n, _ = _draws(device_name, 20000, 1000)
    tokens = ops.sample_top_k_top_p(x.to(device).expand(1, n, 5), 2, 0.0, seed=4)
    assert torch.equal(_counts(tokens, 5) > 0, torch.tensor([True, True, True, False, False]))


# ---- 3. edge cases and errors --------------------------------------------------------------------------
def test_disabled_filters_are_no_filter(device, device_name):
    x = _randn(2, 5 if device_name == "emu" else 50, 100, seed=5, device=device)
    plain = ops.sample_top_k_top_p(x, 0, 0.0, seed=8)
    for top_k, top_p in [(-3, 0.0), (100, 0.0), (1000, 0.0), (0, 1.0), (100, 1.0)]:
        assert torch.equal(ops.sample_top_k_top_p(x, top_k, top_p, seed=8), plain), (top_k, top_p)
    assert not torch.equal(ops.sample_top_k_top_p(x, 5, 0.0, seed=8), plain)
    assert not torch.equal(ops.sample_top_k_top_p(x, 0, 0.5, seed=8), plain)


def test_top_k_1_is_argmax(device, device_name):
    x = _randn(4, 8 if device_name == "emu" else 300, 257, seed=6, device=device)
    assert torch.equal(ops.sample_top_k_top_p(x, 1, 0.0, seed=9), x.argmax(-1))
    assert torch.equal(ops.sample_top_k_top_p(x, 0, 1e-9, seed=9), x.argmax(-1))  # tiny top_p: the top token
    n, _ = _draws(device_name, 4000, 1000)
    tied = torch.zeros(1, n, 10, device=device)
    tied[..., 3] = tied[..., 7] = 1.0
    counts = _counts(ops.sample_top_k_top_p(tied, 1, 0.0, seed=9), 10)
    assert set(counts.nonzero().flatten().tolist()) == {3, 7}
    assert abs(counts[3] - counts[7]) < 6 * n ** 0.5  # six standard deviations of a fair split


def test_neg_inf_logits_are_never_drawn(device, device_name):
    V = 16
    n, widen = _draws(device_name, 100000, 3000)
    x = _randn(V, seed=7)
    x[::3] = -torch.inf
    tokens = ops.sample_top_k_top_p(x.to(device).expand(1, n, V), 0, 0.0, seed=10)
    counts = _counts(tokens, V)
    assert counts[::3].sum() == 0
    expected = x.double().softmax(-1)
    assert 0.5 * (counts / counts.sum() - expected).abs().sum() < 0.01 * widen
    # with top-k larger than the finite count the -inf tokens are kept but still never drawn
    finite = int(torch.isfinite(x).sum())
    tokens = ops.sample_top_k_top_p(x.to(device).expand(1, n // 5, V), finite + 2, 0.9, seed=10)
    assert _counts(tokens, V)[::3].sum() == 0


def test_equal_logits_are_uniform(device, device_name):
    V = 16
    n, widen = _draws(device_name, 200000, 5000)
    tokens = ops.sample_top_k_top_p(torch.full((1, n, V), 3.25, device=device), 0, 0.0, seed=11)
    freq = _counts(tokens, V) / tokens.numel()
    assert 0.5 * (freq - 1.0 / V).abs().sum() < 0.005 * widen


def test_single_token_vocabulary(device):
    x = _randn(3, 7, 1, seed=8, device=device)
    for top_k, top_p in [(0, 0.0), (1, 0.0), (5, 0.5)]:
        assert torch.equal(ops.sample_top_k_top_p(x, top_k, top_p, seed=1), torch.zeros(3, 7, dtype=torch.long,
                                                                                          device=device))
    assert torch.equal(ops.sample_cfg_top_k_top_p(x[:2], 1.5, 0, 0.0, seed=1), torch.zeros(1, 7, dtype=torch.long,
                                                                                           device=device))


def test_empty_batch(device):
    for shape in [(0, 5, 10), (3, 0, 10)]:
        out = ops.sample_top_k_top_p(torch.zeros(shape, device=device), 0, 0.0, seed=1)
        assert out.shape == shape[:2] and out.dtype == torch.int64
    out = ops.sample_cfg_top_k_top_p(torch.zeros(0, 4, 10, device=device), 1.0, 0, 0.0, seed=1)
    assert out.shape == (0, 4)


def test_bad_values_raise(device):
    x = _randn(2, 3, 10, seed=9, device=device)
    for fill, message in [(float("nan"), "logits contain NaN"), (float("inf"), r"logits contain \+inf")]:
        bad = x.clone()
        bad[0, 2, 4] = fill  # a conditional row, for the CFG op
        with pytest.raises(RuntimeError, match=message):
            ops.sample_top_k_top_p(bad, 0, 0.0, seed=1)
        with pytest.raises(RuntimeError, match=message):
            ops.sample_cfg_top_k_top_p(bad, 1.5, 0, 0.0, seed=1)
    bad = x.clone()
    bad[0, 1] = -torch.inf
    with pytest.raises(RuntimeError, match="all -inf"):
        ops.sample_top_k_top_p(bad, 0, 0.0, seed=1)
    # CFG mix of -inf in both halves: (1+g)(-inf) - g(-inf) is NaN
    both = x.clone()
    both[0, 0, 3] = both[1, 0, 3] = -torch.inf
    with pytest.raises(RuntimeError, match="logits contain NaN"):
        ops.sample_cfg_top_k_top_p(both, 1.5, 0, 0.0, seed=1)


def test_bad_arguments_raise(device):
    x = _randn(2, 3, 10, seed=10, device=device)
    for top_p in [-0.1, 1.5, float("nan")]:
        with pytest.raises(RuntimeError, match="top_p"):
            ops.sample_top_k_top_p(x, 0, top_p, seed=1)
        with pytest.raises(RuntimeError, match="top_p"):
            ops.sample_cfg_top_k_top_p(x, 1.0, 0, top_p, seed=1)
    for shape in [(6, 10), (2, 3, 10, 1)]:
        with pytest.raises(RuntimeError, match="3-D"):
            ops.sample_top_k_top_p(x.reshape(shape), 0, 0.0, seed=1)
        with pytest.raises(RuntimeError, match="3-D"):
            ops.sample_cfg_top_k_top_p(x.reshape(shape), 1.0, 0, 0.0, seed=1)
    with pytest.raises(RuntimeError, match="V >= 1"):
        ops.sample_top_k_top_p(x[..., :0], 0, 0.0, seed=1)
    with pytest.raises(RuntimeError, match="CFG-doubled"):
        ops.sample_cfg_top_k_top_p(x[:1], 1.0, 0, 0.0, seed=1)
    with pytest.raises(RuntimeError, match="guidance"):
        ops.sample_cfg_top_k_top_p(x, float("inf"), 0, 0.0, seed=1)
    with pytest.raises(RuntimeError, match="row_offset"):
        ops.sample_top_k_top_p(x, 0, 0.0, seed=1, row_offset=-1)
    with pytest.raises(RuntimeError, match="float32, float16 or bfloat16"):
        ops.sample_top_k_top_p(x.double(), 0, 0.0, seed=1)
    with pytest.raises(RuntimeError, match="float32, float16 or bfloat16"):
        ops.sample_top_k_top_p(x.long(), 0, 0.0, seed=1)


# ---- 4. reproducibility -------------------------------------------------------------------------------
def test_seeds(device, device_name):
    L = 8 if device_name == "emu" else 64
    x = _randn(4, L, 500, seed=12, device=device)
    a = ops.sample_top_k_top_p(x, 50, 0.9, seed=123)
    assert torch.equal(a, ops.sample_top_k_top_p(x, 50, 0.9, seed=123))
    assert (a != ops.sample_top_k_top_p(x, 50, 0.9, seed=124)).float().mean() > 0.5
    assert (a != ops.sample_top_k_top_p(x, 50, 0.9, seed=123, row_offset=1)).float().mean() > 0.5
    # 64-bit seeds: both halves of the key matter; negative seeds are their two's complement
    assert (a != ops.sample_top_k_top_p(x, 50, 0.9, seed=123 + (1 << 40))).float().mean() > 0.5
    negative = ops.sample_top_k_top_p(x, 50, 0.9, seed=-5).cpu()
    model = ref.sample_top_k_top_p_philox(x.cpu(), 50, 0.9, seed=-5)
    ambiguous = _ambiguous_rows(x.cpu().view(-1, 500), 50, 0.9, seed=-5, row_offset=0).view(4, L)
    assert torch.equal(negative[~ambiguous], model[~ambiguous])


@pytest.mark.parametrize("cfg", [False, True], ids=["plain", "cfg"])
def test_rows_are_independent_of_the_batch(device, device_name, cfg):
    B, L, V = 6, 3 if device_name == "emu" else 25, 300
    if cfg:
        x = _randn(2 * B, L, V, seed=13, device=device)
        full = ops.sample_cfg_top_k_top_p(x, 2.0, 40, 0.9, seed=77, row_offset=1000)
    else:
        x = _randn(B, L, V, seed=13, device=device)
        full = ops.sample_top_k_top_p(x, 40, 0.9, seed=77, row_offset=1000)
    for a, b in [(0, 1), (2, 5), (5, 6), (0, 6)]:
        if cfg:
            part = torch.cat((x[a:b], x[B + a:B + b]))
            got = ops.sample_cfg_top_k_top_p(part, 2.0, 40, 0.9, seed=77, row_offset=1000 + a * L)
        else:
            got = ops.sample_top_k_top_p(x[a:b], 40, 0.9, seed=77, row_offset=1000 + a * L)
        assert torch.equal(got, full[a:b]), (a, b)


def test_cfg_is_the_plain_op_on_the_mixed_logits(device, device_name):
    B, L, V = 3, 2 if device_name == "emu" else 20, 400
    x = _randn(2 * B, L, V, seed=14, device=device)
    for g in [0.0, 1.5, 4.0]:
        mixed = ref.cfg_mix(x, g)  # float32, the same roundings as the kernel's mix
        assert torch.equal(ops.sample_cfg_top_k_top_p(x, g, 30, 0.8, seed=5, row_offset=3),
                           ops.sample_top_k_top_p(mixed, 30, 0.8, seed=5, row_offset=3))


# ---- 5. dtypes and strides ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_inputs_are_upcast(device, device_name, dtype):
    x = _randn(3, 2 if device_name == "emu" else 30, 1000, seed=15, dtype=dtype, device=device)
    for top_k, top_p in [(0, 0.0), (100, 0.9)]:
        assert torch.equal(ops.sample_top_k_top_p(x, top_k, top_p, seed=6),
                           ops.sample_top_k_top_p(x.float(), top_k, top_p, seed=6))
        assert torch.equal(ops.sample_cfg_top_k_top_p(x[:2], 1.5, top_k, top_p, seed=6),
                           ops.sample_cfg_top_k_top_p(x[:2].float(), 1.5, top_k, top_p, seed=6))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_noncontiguous_logits(device, device_name, dtype):
    B, L, V = 4, 2 if device_name == "emu" else 15, 333
    transposed = _randn(B, V, L, seed=16, dtype=dtype, device=device).transpose(1, 2)
    strided = _randn(B, L, 2 * V, seed=17, dtype=dtype, device=device)[..., 1::2]
    batch_slice = _randn(2 * B, L, V, seed=18, dtype=dtype, device=device)[::2]
    for x in (transposed, strided, batch_slice):
        assert not x.is_contiguous()
        assert torch.equal(ops.sample_top_k_top_p(x, 20, 0.9, seed=7), ops.sample_top_k_top_p(x.contiguous(), 20, 0.9,
                                                                                              seed=7))
        assert torch.equal(ops.sample_cfg_top_k_top_p(x, 1.25, 20, 0.9, seed=7),
                           ops.sample_cfg_top_k_top_p(x.contiguous(), 1.25, 20, 0.9, seed=7))


# ---- 6. the CUDA kernel (on a GPU, or emulated) against the CPU op -----------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("V", [1, 37, 1000, 4096, 8192, 40000])  # 40000: too large for shared memory
@pytest.mark.parametrize("top_k,top_p", [(0, 0.0), (1, 0.0), (900, 0.96), (0, 0.7), (20, 0.0)])
def test_kernel_matches_cpu(kernel_device, device_name, dtype, V, top_k, top_p):
    if device_name == "emu":  # a few rows: the emulator runs ~20-60 rows/s
        B, L = (1, 2) if V < 10000 else (1, 1)
    else:
        B, L = 2, 64 if V < 10000 else 8
    x = _randn(2 * B, L, V, seed=V, std=3.0, dtype=dtype)
    cpu_ops = torch.ops.var_fast
    # same float32 operations in the same order on both devices: the tokens are identical
    cpu = cpu_ops.sample_top_k_top_p(x, top_k, top_p, 31, 9)
    assert torch.equal(ops.sample_top_k_top_p(x.to(kernel_device), top_k, top_p, seed=31, row_offset=9).cpu(), cpu)
    cpu = cpu_ops.sample_cfg_top_k_top_p(x, 1.5, top_k, top_p, 31, 9)
    assert torch.equal(ops.sample_cfg_top_k_top_p(x.to(kernel_device), 1.5, top_k, top_p, seed=31,
                                                  row_offset=9).cpu(), cpu)


# The row cache (keys and weights of a row, 8 bytes per token, in shared memory) fits an H100 (227 KiB) and
# an A100 (163 KiB) at V = 15000, not the 99 KiB of sm_86 / sm_89: there the kernel reads the row from
# global memory on every pass. V = 4096 fits every GPU, V = 40000 none.
ROW_CACHED = {4096: {"h100", "a100", "rtx4090", "a10", "l4"}, 15000: {"h100", "a100"}, 40000: set()}


@pytest.mark.parametrize("V", sorted(ROW_CACHED))
def test_row_layout_follows_the_device(device_description, emulated_gpu, V):
    """Which row layout the kernel launched with (its dynamic shared memory: the cache, or none) on each
    described GPU, and its tokens equal to the CPU op's."""
    x = _randn(2, 1, V, seed=V + 1, std=3.0)
    cached = device_description.name in ROW_CACHED[V]
    with emulated_gpu.recorded_launches() as launches:
        plain = ops.sample_top_k_top_p(x, 0, 0.9, seed=5, row_offset=3)
        mixed = ops.sample_cfg_top_k_top_p(x, 1.5, 50, 0.9, seed=5, row_offset=3)
    assert [launch.name for launch in launches] == ["sample_rows_kernel<float, false>", "sample_rows_kernel<float, true>"]
    assert all(launch.smem == (8 * V if cached else 0) for launch in launches)
    assert torch.equal(plain, torch.ops.var_fast.sample_top_k_top_p(x, 0, 0.9, 5, 3))
    assert torch.equal(mixed, torch.ops.var_fast.sample_cfg_top_k_top_p(x, 1.5, 50, 0.9, 5, 3))


# ---- 6a. rows exactly at a threshold: top-k ties and the top-p mass, draw for draw -------------------------
def _exp_nonpositive(x: float) -> np.float32:
    """sampling.cuh's exp_nonpositive, operation for operation in float32."""
    f = np.float32
    x = f(x)
    shifted = x * f(1.44269504088896341) + f(12582912.0)
    n = shifted - f(12582912.0)
    r = (x - n * f(0.693359375)) - n * f(-2.12194440e-4)
    p = f(1.9875691500e-4)
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = p * r + f(c)
    p = (p * (r * r) + r) + f(1.0)
    return p * f(2.0 ** int(n))


def _top_p_at_the_top_token_mass():
    """A row [0, -1, -1] and the top_p whose mass target c = float(top_p * W) is exactly the top token's
    weight 1 (W: the row's weight sum in the canonical order, (1 + w) + w)."""
    w = _exp_nonpositive(-1.0)
    total = (np.float32(1.0) + w) + w
    top_p = 1.0 / float(total)
    assert np.float32(top_p * float(total)) == np.float32(1.0)  # the threshold is hit exactly
    return torch.tensor([0.0, -1.0, -1.0]), top_p


def test_top_p_mass_exactly_at_the_threshold(device, device_name):
    """mass(top token) == c: the top token alone reaches top_p ("the largest t with mass(t) >= c"), so only it
    is ever drawn; just above, the tied pair joins. Kernels equal the CPU op draw for draw."""
    x, top_p = _top_p_at_the_top_token_mass()
    rows = x.expand(1, 48, 3).to(device)
    at = ops.sample_top_k_top_p(rows, 0, top_p, seed=21)
    above = ops.sample_top_k_top_p(rows, 0, top_p * (1 + 1e-6), seed=21)
    assert (at == 0).all()
    assert set(above.flatten().tolist()) == {0, 1, 2}
    if device_name != "cpu":
        assert torch.equal(at.cpu(), torch.ops.var_fast.sample_top_k_top_p(rows.cpu(), 0, top_p, 21, 0))
        assert torch.equal(above.cpu(), torch.ops.var_fast.sample_top_k_top_p(rows.cpu(), 0, top_p * (1 + 1e-6), 21, 0))


@pytest.mark.parametrize("top_k,kept", [(4, 4), (2, 4), (5, 6)], ids=["k-ends-tie-group", "k-inside-tie", "k-splits-pair"])
def test_top_k_exactly_at_a_tie_group(device, device_name, top_k, kept):
    """The k-th largest value counted with multiplicity: k = the size of the top group with its ties keeps
    exactly that group; k inside a tie keeps the whole tie; k splitting a tied pair keeps both. Kernels equal
    the CPU op draw for draw."""
    x = torch.tensor([0.5, 0.0, 0.0, 0.0, -0.2, -0.2, -0.4])
    tokens = ops.sample_top_k_top_p(x.expand(1, 64, 7).to(device), top_k, 0.0, seed=22)
    assert set(tokens.flatten().tolist()) == set(range(kept))
    if device_name != "cpu":
        assert torch.equal(tokens.cpu(), torch.ops.var_fast.sample_top_k_top_p(x.expand(1, 64, 7), top_k, 0.0, 22, 0))


# ---- 6b. errors found on the device, reported through a status word --------------------------------------
@pytest.mark.parametrize("cfg", [False, True], ids=["plain", "cfg"])
@pytest.mark.parametrize("bad,message", [(float("nan"), "contain NaN"), (float("inf"), "contain \\+inf"),
                                         (None, "all -inf")], ids=["nan", "posinf", "allneginf"])
def test_status_defers_the_error(device, cfg, bad, message):
    x = _randn(4 if cfg else 2, 3, 50, seed=5, device=device)
    if bad is None:
        x[1, 2] = -float("inf")
    else:
        x[1, 2, 7] = bad
    op = "sample_cfg_top_k_top_p" if cfg else "sample_top_k_top_p"
    sample = (lambda **kw: ops.sample_cfg_top_k_top_p(x, 1.5, 10, 0.9, seed=1, **kw)) if cfg else \
             (lambda **kw: ops.sample_top_k_top_p(x, 10, 0.9, seed=1, **kw))
    with pytest.raises(RuntimeError, match=f"{op}: .*{message}"):
        sample()
    status = ops.new_status(device)
    tokens = sample(status=status)  # no error yet, no wait for the device
    assert tokens[1, 2].item() == -1 and (tokens[0] >= 0).all()
    assert status.item() != 0
    with pytest.raises(RuntimeError, match=f"{op}: .*{message}"):
        ops.check_status(status, 50)


def test_clean_status_passes(device):
    status = ops.new_status(device)
    ops.sample_cfg_top_k_top_p(_randn(4, 3, 50, seed=6, device=device), 1.5, 10, 0.9, seed=1, status=status)
    assert status.item() == 0
    ops.check_status(status, 50)


def test_bad_status_tensor_raises(device):
    x = _randn(2, 3, 50, seed=7, device=device)
    for status in (torch.zeros(2, dtype=torch.int32, device=device), torch.zeros(1, dtype=torch.int64, device=device)):
        with pytest.raises(RuntimeError, match="status must be a contiguous int32 tensor of one element"):
            ops.sample_top_k_top_p(x, 0, 0.0, seed=1, status=status)


@CUDA_ONLY
def test_cuda_graph_capture():
    x = _randn(4, 100, 4096, seed=19, device="cuda")
    eager = ops.sample_cfg_top_k_top_p(x, 1.5, 900, 0.96, seed=3)
    status = ops.new_status("cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ops.sample_cfg_top_k_top_p(x, 1.5, 900, 0.96, seed=3, status=status)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = ops.sample_cfg_top_k_top_p(x, 1.5, 900, 0.96, seed=3, status=status)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager)
    ops.check_status(status, 4096)


@CUDA_ONLY
def test_cuda_graph_capture_without_status_is_refused():
    x = _randn(2, 3, 50, seed=19, device="cuda")
    ops.sample_top_k_top_p(x, 10, 0.9, seed=3)  # warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="under CUDA graph capture, pass a status tensor"):
        with torch.cuda.graph(graph):
            ops.sample_top_k_top_p(x, 10, 0.9, seed=3)


@pytest.mark.emu
@pytest.mark.parametrize("cfg", [False, True], ids=["plain", "cfg"])
def test_emulated_capture_with_status_never_waits(emulated_gpu, cfg):
    """Under an emulated CUDA graph capture (which fails on a device read or a host synchronisation) the ops
    with a status word run, draw the eager tokens, and leave bad rows' flags in the status."""
    x = _randn(4 if cfg else 2, 3, 50, seed=23)
    x[1, 2, 7] = float("nan")
    op = "sample_cfg_top_k_top_p" if cfg else "sample_top_k_top_p"
    sample = (lambda **kw: ops.sample_cfg_top_k_top_p(x, 1.5, 10, 0.9, seed=1, **kw)) if cfg else \
             (lambda **kw: ops.sample_top_k_top_p(x, 10, 0.9, seed=1, **kw))
    eager = sample(status=ops.new_status("cpu"))
    status = ops.new_status("cpu")
    with emulated_gpu.emulated_capture():
        captured = sample(status=status)
    assert torch.equal(captured, eager) and captured[1, 2] == -1
    with pytest.raises(RuntimeError, match=f"{op}: logits contain NaN"):
        ops.check_status(status, 50)


@pytest.mark.emu
def test_emulated_capture_without_status_is_refused(emulated_gpu):
    """Without a status word bad rows would be read back from the device: under capture the ops refuse
    clearly, before launching."""
    x = _randn(4, 3, 50, seed=24)
    with emulated_gpu.emulated_capture(), emulated_gpu.recorded_launches() as launches:
        with pytest.raises(RuntimeError, match="sample_top_k_top_p: under CUDA graph capture, pass a status tensor"):
            ops.sample_top_k_top_p(x, 10, 0.9, seed=1)
        with pytest.raises(RuntimeError, match="sample_cfg_top_k_top_p: under CUDA graph capture, pass a status"):
            ops.sample_cfg_top_k_top_p(x, 1.5, 10, 0.9, seed=1)
    assert launches == []


# ---- 7. opcheck ---------------------------------------------------------------------------------------
def test_opcheck(device, device_name):
    x = _randn(2, 5, 50, seed=20, device=device)
    if device_name == "emu":  # the emulated library has no fake kernels: its schemas and autograd registration
        library, checks = torch.ops.var_fast_emu, dict(test_utils=("test_schema", "test_autograd_registration"))
    else:
        library, checks = torch.ops.var_fast, {}
    status = torch.zeros(1, dtype=torch.int32, device=device)
    torch.library.opcheck(library.sample_top_k_top_p.default, (x, 10, 0.9, 3, 2), **checks)
    torch.library.opcheck(library.sample_top_k_top_p.default, (x.half(), 0, 0.0, 3, 0, status), **checks)
    torch.library.opcheck(library.sample_cfg_top_k_top_p.default, (x, 1.5, 10, 0.9, 3, 2), **checks)
    torch.library.opcheck(library.sample_cfg_top_k_top_p.default, (x[:, 1:].transpose(1, 2), 0.0, 0, 0.0, 3, 0),
                          **checks)


def test_philox_known_answers():
    # Random123's kat_vectors for philox4x32-10; the native ops' tokens are checked against this model
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for counter, key, expected in cases:
        assert ref.philox4x32_10(torch.tensor(counter), key).tolist() == list(expected)
