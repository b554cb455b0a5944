"""sample_bits / sample_cfg_bits: Infinity's per-bit sampling (tau, CFG mix, top-k / top-p on each pair of bit
logits, one Philox draw per bit).

The semantics are documented in csrc/include/var_fast/bitwise_sampling.cuh; var_fast.reference.bitwise_sampling
holds upstream's formulas (``bit_logits``, ``filter_bits_``, ``filtered_pair_probs``) and a float64 model of the
ops' draw (``sample_bits_philox``). CPU and CUDA kernels run the same float32 operations in the same order, so on
CUDA (or emulated) the bits are compared with the CPU op's for exact equality.
"""
import math

import numpy as np
import pytest
import torch

from conftest import HAS_CUDA
from var_fast import ops
from var_fast.reference import bitwise_sampling as ref

CUDA_ONLY = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16"),
          pytest.param(torch.bfloat16, id="bf16")]


def _randn(*shape, seed, std=2.0, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * std).to(device=device, dtype=dtype)


def _sample(x, cfg, tau, top_k=0, top_p=0.0, seed=0, image_offset=0, **kw):
    if cfg is None:
        return ops.sample_bits(x, tau, top_k, top_p, seed=seed, image_offset=image_offset, **kw)
    return ops.sample_cfg_bits(x, cfg, tau, top_k, top_p, seed=seed, image_offset=image_offset, **kw)


def _ambiguous(x, cfg, tau, top_k, top_p, seed, image_offset, rel=1e-5):
    """Bits (B, L, D) whose draw the float32 op may decide differently from the float64 model: the uniform
    within `rel` of P(bit 0), or (top-p) the smaller logit's probability within `rel` of 1 - top_p (the ops'
    exp and torch's differ by an ulp or so). Exact ties are never ambiguous: both sides compute 1/2 exactly."""
    pairs = ref.bit_logits(x.cpu(), tau, cfg).double()
    p0 = ref.filtered_pair_probs(x.cpu(), tau, cfg, top_k, top_p)[..., 0]
    B, L, D = p0.shape
    u = ref.philox_bit_uniforms(seed, image_offset, B, L, D)
    ambiguous = (u - p0).abs() < rel
    if 0 < top_p < 1:
        lo, hi = pairs.amin(-1), pairs.amax(-1)
        p_small = torch.sigmoid(lo - hi)
        ambiguous |= ((p_small - (1 - top_p)).abs() < rel) & (lo != hi)
    return ambiguous


# ---- 1. the draw: the float64 model of the reference's filtered probabilities, bit for bit ---------------------
SHAPES = [(1, 1, 1), (2, 5, 7), (3, 9, 32), (2, 3, 5)]  # (B, L, D): one bit, odd D, whole groups of 4, a tail
FILTERS = [(0, 0.0), (1, 0.0), (2, 0.0), (0, 0.5), (0, 0.9), (1, 0.3), (2, 0.7)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("top_k,top_p", FILTERS, ids=[f"k{k}-p{p}" for k, p in FILTERS])
@pytest.mark.parametrize("cfg,tau", [(None, 1.0), (None, 0.7), (3.0, 1.0), (1.5, 0.55)],
                         ids=["plain", "plain-tau", "cfg", "cfg-tau"])
def test_bits_match_the_reference_model(device, dtype, shape, top_k, top_p, cfg, tau):
    B, L, D = shape
    x = _randn(B if cfg is None else 2 * B, L, 2 * D, seed=B * 100 + L * 10 + D, std=1.5, dtype=dtype)
    bits = _sample(x.to(device), cfg, tau, top_k, top_p, seed=77, image_offset=5)
    assert bits.shape == (B, L, D) and bits.dtype == torch.int64
    expected = ref.sample_bits_philox(x, tau, cfg, top_k, top_p, seed=77, image_offset=5)
    ambiguous = _ambiguous(x, cfg, tau, top_k, top_p, 77, 5)
    assert ambiguous.double().mean() < 0.02
    differ = bits.cpu() != expected
    assert not (differ & ~ambiguous).any(), f"{int((differ & ~ambiguous).sum())} bits differ from the model"


def test_the_model_is_upstreams_sampler():
    """The model's filter is upstream's (reference_sampler.sample_bits on the reshaped (B, L*D, 2) pairs): the
    same kept bits; and upstream's torch draw (sample_bits_) lands on a kept bit."""
    from var_fast.infinity.reference_sampler import sample_bits as upstream
    x = _randn(4, 6, 20, seed=3)
    for top_k, top_p in FILTERS:
        pairs = ref.bit_logits(x, 0.8, 2.0)
        mine = ref.filter_bits_(pairs.clone(), top_k, top_p)
        theirs = pairs.clone().reshape(2, -1, 2)
        upstream(theirs, top_k, top_p, torch.Generator().manual_seed(0))  # filters in place
        assert torch.equal(mine.reshape(2, -1, 2), theirs)
        drawn = ref.sample_bits_(x, 0.8, 2.0, top_k, top_p, torch.Generator().manual_seed(1))
        assert (ref.filtered_pair_probs(x, 0.8, 2.0, top_k, top_p).gather(-1, drawn.unsqueeze(-1)) > 0).all()


# ---- 2. greedy (top_k = 1): the argmax bit of upstream's float32 mix, exactly --------------------------------
def _near_ties(N, L, D, seed):
    """Logits 1 + k * 2^-23 (k in [-3, 3]): pairs tied or an ulp apart, where the rounding of the mix decides."""
    gen = torch.Generator().manual_seed(seed)
    return 1.0 + torch.randint(-3, 4, (N, L, 2 * D), generator=gen).float() * 2.0 ** -23


@pytest.mark.parametrize("cfg,tau", [(None, 0.7), (3.0, 1.0), (2.5, 0.55)], ids=["plain", "cfg", "cfg-tau"])
def test_greedy_is_the_argmax_of_upstreams_rounding(device, cfg, tau):
    B, L, D = 2, 200, 32
    x = _near_ties(B if cfg is None else 2 * B, L, D, seed=8)
    bits = _sample(x.to(device), cfg, tau, top_k=1, seed=9).cpu()
    pairs = ref.bit_logits(x, tau, cfg)
    untied = pairs[..., 0] != pairs[..., 1]
    assert untied.double().mean() > 0.5
    assert torch.equal(bits[untied], (pairs[..., 1] > pairs[..., 0])[untied].long())
    if cfg is not None:  # the data discriminates: another rounding (float64, then one rounding) argmaxes elsewhere
        x64 = x.double() * (1 / tau)
        mix64 = (cfg * x64[:B] + (1 - cfg) * x64[B:]).reshape(B, L, D, 2)
        assert ((mix64[..., 1] > mix64[..., 0]) != (pairs[..., 1] > pairs[..., 0])).any()


def test_greedy_ties_keep_both_bits(device):
    """top_k = 1 keeps every logit equal to the max (upstream's `x < topk(x, 1).min()` removal): a tied pair,
    -0 and +0 included, keeps both bits and draws them 1/2 each, as upstream's multinomial does."""
    L = 4000
    x = torch.tensor([0.25, 0.25, 0.0, -0.0, -0.0, 0.0, 0.5, -1.0]).expand(1, L, 8)
    bits = ops.sample_bits(x.to(device), 1.0, top_k=1, seed=10).cpu()
    assert ref.filtered_bit_probs(x[:, :1], 1.0, top_k=1).flatten().tolist() == [0.5, 0.5, 0.5, 0.0]
    assert (bits[..., 3] == 0).all()
    freq = bits[..., :3].double().mean(1).flatten()
    assert ((freq - 0.5).abs() < 5 * math.sqrt(0.25 / L)).all(), freq


@pytest.mark.parametrize("top_p,p1", [(0.5, 1.0), (0.3, 1.0), (0.5 + 1e-6, 0.5), (0.9, 0.5)])
def test_top_p_at_a_tie_drops_bit_0(device, top_p, p1):
    """torch's CPU sort puts bit 0 first in a tied pair, so upstream's top-p drops it (probability 1/2 exactly)
    when 1/2 <= 1 - top_p, and keeps both otherwise; the ops do the same."""
    L = 2000
    x = torch.tensor([1.0, 1.0, -0.0, 0.0]).expand(1, L, 4)
    assert ref.filtered_bit_probs(x[:, :1], 1.0, top_p=top_p).flatten().tolist() == [p1, p1]
    bits = ops.sample_bits(x.to(device), 1.0, top_p=top_p, seed=11).cpu()
    if p1 == 1.0:
        assert (bits == 1).all()
    else:
        assert ((bits.double().mean(1) - 0.5).abs() < 5 * math.sqrt(0.25 / L)).all()


# ---- 3. frequencies: a seeded distribution check against the reference's filtered probabilities --------------
FREQ_CONFIGS = [  # (name, cfg, tau, top_k, top_p)
    ("plain", None, 1.0, 0, 0.0),
    ("tau", None, 0.6, 0, 0.0),
    ("top_k2", None, 1.0, 2, 0.0),
    ("top_p", None, 1.0, 0, 0.7),
    ("cfg_top_p", 2.0, 0.9, 0, 0.8),
    ("cfg_top_k1_top_p", 1.5, 1.0, 1, 0.9),
]


@pytest.mark.parametrize("name,cfg,tau,top_k,top_p", FREQ_CONFIGS, ids=[c[0] for c in FREQ_CONFIGS])
def test_frequencies_match_filtered_probabilities(device, name, cfg, tau, top_k, top_p):
    """16 pairs (probabilities from ~0 to ~1, some cut by the filters) drawn n times each (n tokens of one row,
    stride 0): each bit's frequency of 1 within 5 binomial standard deviations of the reference's p1."""
    n = 100_000
    D = 16
    row = _randn(1 if cfg is None else 2, 1, 2 * D, seed=12, std=1.5)
    p1 = ref.filtered_bit_probs(row, tau, cfg, top_k, top_p).flatten()
    if top_k == 1 or top_p:
        assert ((p1 == 0) | (p1 == 1)).any()  # the filter is active
    freq = _sample(row.to(device).expand(row.shape[0], n, 2 * D), cfg, tau, top_k, top_p, seed=2024).cpu()
    freq = freq.double().mean(1).flatten()
    assert (freq[p1 == 0] == 0).all() and (freq[p1 == 1] == 1).all(), "a filtered-out bit was drawn"
    bound = 5 * torch.sqrt(p1 * (1 - p1) / n) + 1e-12
    assert ((freq - p1).abs() <= bound).all(), (freq - p1).abs().max()


# ---- 4. images, seeds, layout ----------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [None, 2.0], ids=["plain", "cfg"])
def test_images_are_independent_of_the_batch(device, cfg):
    """An image's bits depend only on its logits, the seed and its global index image_offset + b."""
    B, L, D = 5, 20, 7
    x = _randn(B if cfg is None else 2 * B, L, 2 * D, seed=13, device=device)
    full = _sample(x, cfg, 0.8, 0, 0.9, seed=14, image_offset=100)
    for b in range(B):
        alone = x[b:b + 1] if cfg is None else x[[b, B + b]]
        assert torch.equal(_sample(alone, cfg, 0.8, 0, 0.9, seed=14, image_offset=100 + b), full[b:b + 1])
    assert not torch.equal(_sample(x, cfg, 0.8, 0, 0.9, seed=15, image_offset=100), full)  # the seed matters
    assert not torch.equal(_sample(x, cfg, 0.8, 0, 0.9, seed=14, image_offset=101)[:-1], full[1:])


def test_tau_scales_the_logits(device):
    """x * float32(1 / tau): tau = 0.5 is x * 2 exactly, so it draws the bits of 2x at tau 1."""
    x = _randn(2, 10, 24, seed=16, device=device)
    assert torch.equal(ops.sample_bits(x, 0.5, seed=3), ops.sample_bits(x * 2, 1.0, seed=3))
    assert torch.equal(ops.sample_cfg_bits(x, 2.0, 0.5, seed=3), ops.sample_cfg_bits(x * 2, 2.0, 1.0, seed=3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_noncontiguous_and_low_precision_logits(device, dtype):
    """Strided logits and fp16 / bf16 inputs: the bits of the contiguous float32 upcast."""
    B, L, D = 2, 12, 9
    base = _randn(2 * B, 2 * D, L + 1, seed=17, dtype=dtype, device=device)
    x = base[:, :, 1:].transpose(1, 2)  # (2B, L, 2D), stride 1 over L
    assert not x.is_contiguous()
    plain, expected = ops.sample_bits(x, 0.9, 2, 0.8, seed=4), ops.sample_bits(x.float().contiguous(), 0.9, 2, 0.8, seed=4)
    assert torch.equal(plain, expected)
    mixed = ops.sample_cfg_bits(x, 2.5, 0.9, 1, 0.0, seed=4)
    assert torch.equal(mixed, ops.sample_cfg_bits(x.float().contiguous(), 2.5, 0.9, 1, 0.0, seed=4))


def test_empty_batch(device):
    for shape in [(0, 4, 6), (2, 0, 6)]:
        bits = ops.sample_bits(torch.zeros(shape, device=device), 1.0)
        assert bits.shape == (shape[0], shape[1], 3) and bits.dtype == torch.int64
    assert ops.sample_cfg_bits(torch.zeros(0, 3, 4, device=device), 3.0, 1.0).shape == (0, 3, 2)


def test_neg_inf_logit_is_never_drawn(device):
    x = torch.tensor([-float("inf"), 0.0, 3.0, -float("inf")]).expand(1, 50, 4).to(device)
    bits = ops.sample_bits(x, 1.0, seed=5).cpu()
    assert (bits[..., 0] == 1).all() and (bits[..., 1] == 0).all()


# ---- 5. errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [None, 2.0], ids=["plain", "cfg"])
@pytest.mark.parametrize("bad,message", [(float("nan"), "logits contain NaN"), (float("inf"), "logits contain \\+inf"),
                                         (None, "a pair of bit logits is all -inf")], ids=["nan", "posinf", "allneginf"])
def test_bad_logits_raise_or_set_status(device, cfg, bad, message):
    x = _randn(2 if cfg is None else 4, 3, 10, seed=18, device=device)
    if bad is None:
        x[1, 2, 4:6] = -float("inf")
    else:
        x[1, 2, 5] = bad
    op = "sample_bits" if cfg is None else "sample_cfg_bits"
    with pytest.raises(RuntimeError, match=f"{op}: {message}"):
        _sample(x, cfg, 1.0, 1, 0.5, seed=1)
    status = ops.new_status(device)
    bits = _sample(x, cfg, 1.0, 1, 0.5, seed=1, status=status)  # no error yet, no wait for the device
    assert bits[1, 2, 2].item() == -1 and (bits[0] >= 0).all() and (bits[1, :2] >= 0).all()
    assert status.item() != 0
    with pytest.raises(RuntimeError, match=f"{op}: {message}"):
        ops.check_status(status, 2)


def test_the_mix_can_make_logits_bad(device):
    """+inf after the mix: (1 - cfg) * (-inf) with cfg > 1 is +inf."""
    x = torch.zeros(2, 1, 2, device=device)
    x[1, 0, 0] = -float("inf")
    with pytest.raises(RuntimeError, match="sample_cfg_bits: logits contain \\+inf .*mixed"):
        ops.sample_cfg_bits(x, 3.0, 1.0)


def test_clean_status_passes(device):
    status = ops.new_status(device)
    ops.sample_cfg_bits(_randn(4, 3, 10, seed=19, device=device), 3.0, 1.0, 1, 0.9, status=status)
    assert status.item() == 0
    ops.check_status(status, 2)


def test_bad_arguments_raise(device):
    x = _randn(2, 3, 10, seed=20, device=device)
    cases = [
        (lambda: ops.sample_bits(x[0], 1.0), "logits must be 3-D"),
        (lambda: ops.sample_bits(x[..., :9], 1.0), "even size 2D"),
        (lambda: ops.sample_bits(x[..., :0], 1.0), "even size 2D"),
        (lambda: ops.sample_cfg_bits(x[:1], 3.0, 1.0), "CFG-doubled batch"),
        (lambda: ops.sample_cfg_bits(x, float("nan"), 1.0), "cfg must be finite"),
        (lambda: ops.sample_bits(x, 0.0), "tau must be > 0"),
        (lambda: ops.sample_bits(x, -1.0), "tau must be > 0"),
        (lambda: ops.sample_bits(x, 1e-300), "tau must be > 0 with 1 / tau a finite float32"),
        (lambda: ops.sample_bits(x, 1.0, top_k=-1), "top_k must be >= 0"),
        (lambda: ops.sample_bits(x, 1.0, top_p=1.5), "top_p must be in \\[0, 1\\]"),
        (lambda: ops.sample_bits(x, 1.0, top_p=-0.1), "top_p must be in \\[0, 1\\]"),
        (lambda: ops.sample_bits(x, 1.0, image_offset=-1), "image_offset must be >= 0"),
        (lambda: ops.sample_bits(x.long(), 1.0), "logits must be float32, float16 or bfloat16"),
        (lambda: ops.sample_bits(x, 1.0, status=torch.zeros(2, dtype=torch.int32, device=device)),
         "status must be a contiguous int32 tensor of one element"),
    ]
    for call, message in cases:
        with pytest.raises(RuntimeError, match=message):
            call()


# ---- 6. the CUDA kernel (on a GPU, or emulated) against the CPU op ------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [1, 3, 4, 32, 129])
@pytest.mark.parametrize("top_k,top_p", [(0, 0.0), (1, 0.0), (2, 0.6), (0, 0.95)])
def test_kernel_matches_cpu(kernel_device, dtype, D, top_k, top_p):
    B, L = 4, 256
    x = _randn(2 * B, L, 2 * D, seed=D, std=3.0, dtype=dtype)
    cpu_ops = torch.ops.var_fast
    assert torch.equal(ops.sample_bits(x.to(kernel_device), 0.7, top_k, top_p, seed=31, image_offset=9).cpu(),
                       cpu_ops.sample_bits(x, 0.7, top_k, top_p, 31, 9))
    assert torch.equal(ops.sample_cfg_bits(x.to(kernel_device), 3.0, 0.7, top_k, top_p, seed=31, image_offset=9).cpu(),
                       cpu_ops.sample_cfg_bits(x, 3.0, 0.7, top_k, top_p, 31, 9))


@pytest.mark.emu
@pytest.mark.parametrize("branch,shape,dtype,cfg,name", [
    # groups = B * L * ceil(D / 4) threads of 256 per block
    ("one partial block, whole groups", (1, 3, 8), torch.float32, False, "sample_bits_kernel<float, false>"),
    ("one partial block, partial last group (D % 4 == 3)", (2, 5, 7), torch.float16, True,
     "sample_bits_kernel<c10::Half, true>"),
    ("whole blocks (512 groups)", (2, 64, 16), torch.bfloat16, False, "sample_bits_kernel<c10::BFloat16, false>"),
    ("several blocks, partial last (300 groups, D % 4 == 1)", (3, 50, 5), torch.float32, True,
     "sample_bits_kernel<float, true>"),
])
def test_launch_plan_branches(emulated_gpu, branch, shape, dtype, cfg, name):
    """Each branch of plan_sample_bits, asserted from the launch it made: the kernel variant (dtype, CFG), one
    block of 256 threads per 256 groups of 4 bits; the bits equal the CPU op's."""
    B, L, D = shape
    x = _randn(2 * B if cfg else B, L, 2 * D, seed=21, dtype=dtype)
    with emulated_gpu.recorded_launches() as launches:
        got = _sample(x, 2.0 if cfg else None, 0.9, 1, 0.7, seed=6, image_offset=2)
    groups = B * L * -(-D // 4)
    (launch,) = launches
    assert launch.name == name, branch
    assert launch.block == 256 and launch.grid == (-(-groups // 256), 1, 1) and launch.smem == 0
    assert (groups % 256 != 0) == ("partial" in branch.split(",")[0] or "partial last (" in branch)
    assert (D % 4 != 0) == ("D % 4" in branch)
    cpu = torch.ops.var_fast
    expected = cpu.sample_cfg_bits(x, 2.0, 0.9, 1, 0.7, 6, 2) if cfg else cpu.sample_bits(x, 0.9, 1, 0.7, 6, 2)
    assert torch.equal(got, expected)


@CUDA_ONLY
def test_cuda_graph_capture():
    x = _randn(16, 1024, 64, seed=22, device="cuda")
    eager = ops.sample_cfg_bits(x, 3.0, 0.8, 1, 0.9, seed=3)
    status = ops.new_status("cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ops.sample_cfg_bits(x, 3.0, 0.8, 1, 0.9, seed=3, status=status)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = ops.sample_cfg_bits(x, 3.0, 0.8, 1, 0.9, seed=3, status=status)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager)
    ops.check_status(status, 2)


@CUDA_ONLY
def test_cuda_graph_capture_without_status_is_refused():
    x = _randn(2, 3, 10, seed=23, device="cuda")
    ops.sample_bits(x, 1.0, seed=3)  # warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="under CUDA graph capture, pass a status tensor"):
        with torch.cuda.graph(graph):
            ops.sample_bits(x, 1.0, seed=3)


@pytest.mark.emu
@pytest.mark.parametrize("cfg", [None, 2.0], ids=["plain", "cfg"])
def test_emulated_capture_with_status_never_waits(emulated_gpu, cfg):
    """Under an emulated CUDA graph capture (which fails on a device read or a host synchronisation) the ops
    with a status word run, draw the eager bits, and leave bad pairs' flags in the status."""
    x = _randn(2 if cfg is None else 4, 3, 10, seed=24)
    x[1, 2, 7] = float("nan")
    eager = _sample(x, cfg, 0.9, 1, 0.9, seed=1, status=ops.new_status("cpu"))
    status = ops.new_status("cpu")
    with emulated_gpu.emulated_capture():
        captured = _sample(x, cfg, 0.9, 1, 0.9, seed=1, status=status)
    assert torch.equal(captured, eager) and captured[1, 2, 3] == -1
    op = "sample_bits" if cfg is None else "sample_cfg_bits"
    with pytest.raises(RuntimeError, match=f"{op}: logits contain NaN"):
        ops.check_status(status, 2)


@pytest.mark.emu
def test_emulated_capture_without_status_is_refused(emulated_gpu):
    x = _randn(4, 3, 10, seed=25)
    with emulated_gpu.emulated_capture(), emulated_gpu.recorded_launches() as launches:
        with pytest.raises(RuntimeError, match="sample_bits: under CUDA graph capture, pass a status tensor"):
            ops.sample_bits(x, 1.0, seed=1)
        with pytest.raises(RuntimeError, match="sample_cfg_bits: under CUDA graph capture, pass a status"):
            ops.sample_cfg_bits(x, 3.0, 1.0, seed=1)
    assert launches == []


# ---- 7. opcheck and the reference's Philox layout ---------------------------------------------------------
def test_opcheck(device, device_name):
    x = _randn(2, 5, 12, seed=26, device=device)
    if device_name == "emu":  # the emulated library has no fake kernels: its schemas and autograd registration
        library, checks = torch.ops.var_fast_emu, dict(test_utils=("test_schema", "test_autograd_registration"))
    else:
        library, checks = torch.ops.var_fast, {}
    status = torch.zeros(1, dtype=torch.int32, device=device)
    torch.library.opcheck(library.sample_bits.default, (x, 0.9, 1, 0.9, 3, 2), **checks)
    torch.library.opcheck(library.sample_bits.default, (x.half(), 1.0, 0, 0.0, 3, 0, status), **checks)
    torch.library.opcheck(library.sample_cfg_bits.default, (x, 3.0, 0.9, 2, 0.5, 3, 2), **checks)
    torch.library.opcheck(library.sample_cfg_bits.default, (x[:, 1:].transpose(1, 2)[..., :4], 1.0, 1.0, 0, 0.0, 3, 0),
                          **checks)


def test_philox_layout_of_the_model():
    """The model's uniform of bit (b, l, d) is word d % 4 of Philox4x32-10 at counter (image lo, image hi, l, d // 4)
    under key (seed lo, seed hi), image = image_offset + b (the layout documented in bitwise_sampling.cuh)."""
    seed, offset = (7 << 32) | 3, (1 << 32) + 5
    u = ref.philox_bit_uniforms(seed, offset, 2, 3, 6)
    image, l, d = offset + 1, 2, 5
    words = ref.philox4x32_10(torch.tensor([image & 0xFFFFFFFF, image >> 32, l, d // 4]), (3, 7))
    assert u[1, l, d].item() == (int(words[d % 4]) >> 8) * 2.0 ** -24
    assert np.unique(u.numpy()).size == u.numel()
