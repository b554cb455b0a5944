"""bsq_scale_update (Infinity's per-scale BSQ update) vs its plain-PyTorch reference (var_fast.reference.bsq)
and vs the lines of the reference sampler's loop (var_fast/infinity/reference_sampler.py) it replaces.

Bitwise everywhere (float32): the op does torch's CPU interpolation's float operations in the same order,
with the same fused multiply-adds (var_fast/bsq_interp.h). On ``emu`` (the CUDA sources run by the CPU
emulator) the same holds: the kernels use the same formula with explicit __fmaf_rn / __fmul_rn. On a real
GPU the reference runs torch's CUDA interpolation (other roundings); the CUDA op keeps the CPU formula, so
``cuda`` is compared with the reference computed on the CPU."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from var_fast.infinity.bsq_quantizer import BSQ
from var_fast.infinity.schedules import scale_schedule, vae_schedule
from var_fast.native import extension as _ext
from var_fast.reference import bsq as ref

pytestmark = pytest.mark.skipif(not _ext.available(), reason=f"var_fast._C not built: {_ext.load_error()}")

if _ext.available():
    from var_fast import ops

BIT_OUT_OF_RANGE = 32  # status::kBitOutOfRange (csrc/include/var_fast/status_flags.h)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rng(seed):
    return torch.Generator().manual_seed(seed)


def _case(B, h, w, d, H, W, patchify, seed):
    """Random bits (B, h, w, D) and summed codes (B, d, H, W) as earlier scales would have left them."""
    g = _rng(seed)
    D = 4 * d if patchify else d
    bits = torch.randint(0, 2, (B, h, w, D), generator=g)
    summed = torch.randn(B, d, H, W, generator=g) * 0.3
    return bits, summed


def _run_both(device, bits, summed, nh, nw, patchify):
    """(summed after the op, op's next input) and the reference's, computed on the CPU."""
    s_ref = summed.clone()
    n_ref = ref.bsq_scale_update(bits, s_ref, nh, nw, patchify)
    s_op = summed.to(device)
    n_op = ops.bsq_scale_update(bits.to(device), s_op, nh, nw, patchify)
    return s_op.cpu(), n_op.cpu(), s_ref, n_ref


# (B, h, w, d, H, W, next_h, next_w, patchify): grids on the transformer's side for bits, on the VAE's for
# summed codes and the next grid
CASES = [
    pytest.param(2, 1, 1, 32, 8, 8, 2, 2, False, id="first-1x1-up"),
    pytest.param(1, 4, 4, 32, 8, 8, 6, 6, False, id="upsample-d32"),
    pytest.param(2, 8, 8, 32, 8, 8, 0, 0, False, id="last-same-size"),
    pytest.param(1, 6, 6, 32, 6, 6, 8, 8, False, id="same-size-then-up"),
    pytest.param(2, 3, 2, 16, 9, 6, 4, 3, False, id="non-square-1.5"),
    pytest.param(1, 2, 5, 8, 8, 20, 3, 6, False, id="non-square-0.4"),
    pytest.param(2, 5, 4, 5, 15, 12, 10, 8, False, id="odd-d5-tail"),
    pytest.param(1, 3, 3, 17, 11, 7, 5, 4, False, id="odd-d17-vector-and-tail"),
    pytest.param(2, 2, 3, 3, 7, 9, 4, 5, False, id="odd-d3-generic"),
    pytest.param(1, 2, 2, 1, 5, 5, 3, 3, False, id="d1-generic"),
    pytest.param(2, 1, 1, 8, 12, 12, 4, 4, True, id="patchify-first"),
    pytest.param(1, 3, 2, 5, 12, 8, 8, 6, True, id="patchify-odd-d-non-square"),
    pytest.param(2, 4, 4, 32, 8, 8, 0, 0, True, id="patchify-last"),
    pytest.param(1, 2, 2, 3, 10, 10, 6, 6, True, id="patchify-d3"),
]


@pytest.mark.parametrize("B,h,w,d,H,W,nh,nw,patchify", CASES)
def test_matches_reference_bitwise(device, B, h, w, d, H, W, nh, nw, patchify):
    bits, summed = _case(B, h, w, d, H, W, patchify, seed=B * 1000 + h * 100 + w * 10 + d)
    s_op, n_op, s_ref, n_ref = _run_both(device, bits, summed, nh, nw, patchify)
    assert torch.equal(s_op, s_ref)
    if nh == 0:
        assert n_op.numel() == 0 and n_op.dtype == torch.float32
    else:
        L = (nh // 2) * (nw // 2) if patchify else nh * nw
        assert n_op.shape == (B, L, 4 * d if patchify else d) and n_op.is_contiguous()
        assert torch.equal(n_op, n_ref)


def _reference_loop(bits_per_scale, schedule, patchify, d):
    """The lines of infer_reference's loop after the bits are drawn, verbatim in their operations (BSQ as the
    VAE's quantizer, codes_to_grid = F.interpolate(mode='trilinear')); returns (summed codes, next inputs)."""
    import torch.nn.functional as F
    bsq = BSQ(d)
    vae_sched = vae_schedule(schedule, patchify)
    summed_codes, nexts = 0, []
    for si, idx in enumerate(bits_per_scale):
        if patchify:
            idx = F.pixel_shuffle(idx.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        codes = bsq.bits_to_codes(idx.unsqueeze(1))
        if si != len(schedule) - 1:
            summed_codes += F.interpolate(codes, size=vae_sched[-1], mode="trilinear")
            nxt = F.interpolate(summed_codes, size=vae_sched[si + 1], mode="trilinear").squeeze(-3)
            if patchify:
                nxt = F.pixel_unshuffle(nxt, 2)
            nexts.append(nxt.reshape(*nxt.shape[:2], -1).permute(0, 2, 1))
        else:
            summed_codes += codes
    return summed_codes.squeeze(-3), nexts


@pytest.mark.parametrize("ratio,pixels", [(1.0, "0.25M"), (1.333, "0.06M"), (0.5, "0.06M"), (3.0, "0.06M"),
                                          (0.4, "0.06M")])
@pytest.mark.parametrize("patchify,d", [(False, 32), (True, 16), (False, 5), (True, 3)],
                         ids=["d32", "patchify-d16", "d5", "patchify-d3"])
def test_schedule_equals_reference_loop(device, device_name, ratio, pixels, patchify, d):
    """A whole schedule of upstream's aspect-ratio templates: the op's summed codes and next inputs equal the
    reference loop's at every scale."""
    if device_name == "emu" and (pixels != "0.06M" or d == 32):
        pytest.skip("emu: the emulator is slow; the small schedules and d run there")
    schedule = scale_schedule(ratio, pixels)
    B, g = 2, _rng(7)
    bits = [torch.randint(0, 2, (B, h, w, 4 * d if patchify else d), generator=g) for _, h, w in schedule]
    want_summed, want_next = _reference_loop(bits, schedule, patchify, d)
    _, H, W = vae_schedule(schedule, patchify)[-1]
    summed = torch.zeros(B, d, H, W, device=device)
    vae = vae_schedule(schedule, patchify)
    for si, b in enumerate(bits):
        nh, nw = vae[si + 1][1:] if si + 1 < len(schedule) else (0, 0)
        nxt = ops.bsq_scale_update(b.to(device), summed, nh, nw, patchify)
        if si + 1 < len(schedule):
            assert torch.equal(nxt.cpu(), want_next[si]), f"scale {si}"
    assert torch.equal(summed.cpu(), want_summed)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_summed_codes_any_layout(device, layout):
    """summed_codes is updated in place whatever its strides; the values do not depend on them."""
    bits, summed = _case(2, 3, 3, 6, 7, 5, False, seed=3)
    if layout == "channels_last":
        target = summed.to(device).contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # a view into a larger buffer
        target = torch.zeros(2, 6, 9, 12, device=device)[:, :, 1:8, 2:12:2]
        target.copy_(summed)
    else:
        target = summed.to(device)
    s_ref = summed.clone()
    n_ref = ref.bsq_scale_update(bits, s_ref, 4, 3, False)
    n_op = ops.bsq_scale_update(bits.to(device), target, 4, 3, False)
    assert torch.equal(target.cpu(), s_ref) and torch.equal(n_op.cpu(), n_ref)


def test_non_contiguous_bits(device):
    bits, summed = _case(2, 4, 3, 8, 8, 6, False, seed=5)
    wide = torch.zeros(2, 3, 4, 8, dtype=torch.int64)
    wide.copy_(bits.transpose(1, 2))
    s_ref = summed.clone()
    n_ref = ref.bsq_scale_update(bits, s_ref, 3, 3, False)
    s_op = summed.to(device)
    n_op = ops.bsq_scale_update(wide.transpose(1, 2).to(device), s_op, 3, 3, False)
    assert torch.equal(s_op.cpu(), s_ref) and torch.equal(n_op.cpu(), n_ref)


# ---- bits outside {0, 1} -----------------------------------------------------------------------------------------
def _bad_bits(device):
    bits, summed = _case(2, 2, 2, 4, 4, 4, False, seed=9)
    bad = bits.clone()
    bad[0, 1, 0, 2], bad[1, 0, 1, 3] = 2, -(2 ** 40)
    as_zero = torch.where((bad == 0) | (bad == 1), bad, 0)
    return bad.to(device), as_zero.to(device), summed.to(device)


def test_bad_bits_raise_before_touching_summed(device):
    bad, _, summed = _bad_bits(device)
    before = summed.clone()
    with pytest.raises(RuntimeError, match=r"bsq_scale_update: bits must be 0 or 1"):
        ops.bsq_scale_update(bad, summed, 2, 2, False)
    assert torch.equal(summed, before)


def test_bad_bits_set_the_status_flag(device):
    bad, as_zero, summed = _bad_bits(device)
    status = ops.new_status(device)
    plain = summed.clone()
    got = ops.bsq_scale_update(bad, summed, 2, 2, False, status=status)  # no raise, no host check
    assert int(status.item()) == BIT_OUT_OF_RANGE
    with pytest.raises(RuntimeError, match=r"bsq_scale_update: bits must be 0 or 1"):
        ops.check_status(status, 0)
    expected = ops.bsq_scale_update(as_zero, plain, 2, 2, False)  # the bad bits read as 0
    assert torch.equal(summed, plain) and torch.equal(got, expected)


def test_status_stays_clear_for_valid_bits(device):
    _, good, summed = _bad_bits(device)
    status = ops.new_status(device)
    plain = summed.clone()
    got = ops.bsq_scale_update(good, summed, 2, 2, False, status=status)
    assert int(status.item()) == 0
    ops.check_status(status, 0)
    assert torch.equal(got, ops.bsq_scale_update(good, plain, 2, 2, False)) and torch.equal(summed, plain)


# ---- argument errors -------------------------------------------------------------------------------------------
def test_argument_errors(device):
    bits, summed = (t.to(device) for t in _case(2, 2, 2, 4, 4, 4, False, seed=1))
    pbits = torch.randint(0, 2, (2, 2, 2, 16), device=device)
    cases = [
        ((bits[0], summed, 2, 2, False), "bits must be 4-D"),
        ((bits.int(), summed, 2, 2, False), "bits must be int64"),
        ((bits, summed[0], 2, 2, False), "summed_codes must be 4-D"),
        ((bits, summed.double(), 2, 2, False), "summed_codes must be float32"),
        ((bits, summed[:1], 2, 2, False), r"summed_codes must be \(B, d, H, W\) = \(2, 4, H, W\)"),
        ((bits, summed[:, :3], 2, 2, False), r"summed_codes must be \(B, d, H, W\)"),
        ((bits[:, :0], summed, 2, 2, False), "bits must not be empty"),
        ((torch.randint(0, 2, (2, 2, 2, 6), device=device), summed, 2, 2, True), "4 \\* d bits"),
        ((bits, summed, 0, 2, False), "next_h and next_w must both be >= 1, or both 0"),
        ((bits, summed, -1, -1, False), "next_h and next_w must both be >= 1, or both 0"),
        ((torch.randint(0, 2, (2, 2, 2, 16), device=device), summed, 3, 2, True), "even sides"),
        ((bits, summed[:, :, :1].expand(2, 4, 4, 4), 2, 2, False), "must not have overlapping elements"),
    ]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            ops.bsq_scale_update(*args)
    ops.bsq_scale_update(pbits, summed.clone(), 2, 2, True)  # valid: D = 16 is 4 * d with d = 4
    with pytest.raises(RuntimeError, match="status must be a contiguous int32 tensor of one element"):
        ops.bsq_scale_update(bits, summed, 2, 2, False, status=torch.zeros(1, dtype=torch.int64, device=device))
    if device != "cpu" and device != "emu":
        with pytest.raises(RuntimeError, match="bits must be on"):
            ops.bsq_scale_update(bits.cpu(), summed, 2, 2, False)


# ---- torch's CPU capabilities: with and without fused multiply-adds ---------------------------------------------
_CAPABILITY_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from var_fast import ops
from var_fast.reference import bsq as ref
g = torch.Generator().manual_seed(0)
bad = []
for d, patchify in [(32, False), (5, False), (3, False), (17, True)]:
    bits = torch.randint(0, 2, (2, 3, 2, 4 * d if patchify else d), generator=g)
    summed = torch.randn(2, d, 14, 10, generator=g)
    s_ref = summed.clone()
    n_ref = ref.bsq_scale_update(bits, s_ref, 8, 6, patchify)
    n_op = ops.bsq_scale_update(bits, summed, 8, 6, patchify)
    if not (torch.equal(summed, s_ref) and torch.equal(n_op, n_ref)):
        bad.append(d)
print(torch.backends.cpu.get_cpu_capability(), bad)
sys.exit(1 if bad else 0)
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="torch's x86 CPU capabilities")
@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_cpu_op_follows_torch_cpu_capability(capability):
    """torch's DEFAULT build rounds every product, its AVX2/AVX512 builds fuse multiply-adds: the op follows the
    capability torch runs with (ATEN_CPU_CAPABILITY), so that it equals the reference on any x86 CPU."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    out = subprocess.run([sys.executable, "-c", _CAPABILITY_SCRIPT.format(root=ROOT)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


# ---- opcheck (schema, fake kernel) -------------------------------------------------------------------------------
@pytest.mark.parametrize("nh,patchify", [(4, False), (0, False), (4, True)], ids=["next", "last", "patchify"])
def test_opcheck(device, device_name, nh, patchify):
    g = _rng(2)
    bits = torch.randint(0, 2, (2, 2, 3, 16 if patchify else 4), generator=g).to(device)
    summed = torch.randn(2, 4, 6, 6, generator=g).to(device)
    if device_name == "emu":  # the emulated library has no fake kernels
        torch.library.opcheck(torch.ops.var_fast_emu.bsq_scale_update.default, (bits, summed, nh, nh, patchify),
                              test_utils=("test_schema", "test_autograd_registration"))
    else:
        torch.library.opcheck(torch.ops.var_fast.bsq_scale_update.default, (bits, summed, nh, nh, patchify))


# ---- launch plan on the emulated GPU: every branch --------------------------------------------------------------
def _launch_case(B, h, w, d, H, W, nh, nw, patchify, layout="contiguous"):
    bits, summed = _case(B, h, w, d, H, W, patchify, seed=11)
    if layout == "channels_last":
        summed = summed.contiguous(memory_format=torch.channels_last)
    return bits, summed


# branch -> (case, device, update kernel, update grid, next grid or None)
PLAN_BRANCHES = {
    # one element per thread: ceil(2*8*9*9 / 256) = 6 blocks; the next input 2*8*4*4 / 256 -> 1 block
    "update+next, column-fastest": (dict(B=2, h=3, w=3, d=8, H=9, W=9, nh=4, nw=4, patchify=False), "h100",
                                    "bsq_update_kernel<false>", 6, 1),
    # channels-last summed codes: the update walks the channel fastest
    "update+next, channel-fastest": (dict(B=2, h=3, w=3, d=8, H=9, W=9, nh=4, nw=4, patchify=False,
                                          layout="channels_last"), "h100", "bsq_update_kernel<true>", 6, 1),
    # last scale: the next-input kernel is not launched
    "last scale, update only": (dict(B=1, h=2, w=2, d=4, H=4, W=4, nh=0, nw=0, patchify=True), "h100",
                                "bsq_update_kernel<false>", 1, None),
    # more bits than summed elements (a downsampling grid): the update covers every bit for the range check
    "bits outnumber summed": (dict(B=1, h=20, w=20, d=4, H=3, W=3, nh=2, nw=2, patchify=False), "h100",
                              "bsq_update_kernel<false>", 7, 1),
    # grid capped at 8 blocks per SM (t4: 40 SMs -> 320 blocks): threads loop over the rest
    "grid-stride, capped": (dict(B=1, h=4, w=4, d=24, H=60, W=60, nh=48, nw=48, patchify=False), "t4",
                            "bsq_update_kernel<false>", 320, 216),
}


@pytest.mark.emu
@pytest.mark.parametrize("branch", list(PLAN_BRANCHES))
def test_launch_plan_branches(emulated_gpu, branch):
    case, gpu, update_kernel, update_grid, next_grid = PLAN_BRANCHES[branch]
    layout = case.pop("layout", "contiguous")
    bits, summed = _launch_case(**case, layout=layout)
    case["layout"] = layout
    description = emulated_gpu.T4 if gpu == "t4" else emulated_gpu.BY_NAME[gpu]
    s_ref = summed.clone()
    n_ref = ref.bsq_scale_update(bits, s_ref, case["nh"], case["nw"], case["patchify"])
    with emulated_gpu.described_as(description):
        with emulated_gpu.recorded_launches() as launches:
            got = ops.bsq_scale_update(bits, summed, case["nh"], case["nw"], case["patchify"])
    names = [launch.name for launch in launches]
    expected = [update_kernel] + (["bsq_next_kernel"] if next_grid is not None else [])
    assert names == expected, names
    assert launches[0].grid == (update_grid, 1, 1) and launches[0].block == 256
    if next_grid is not None:
        assert launches[1].grid == (next_grid, 1, 1)
        assert torch.equal(got, n_ref)
    assert torch.equal(summed, s_ref)


# ---- CUDA graph capture on the emulated GPU ---------------------------------------------------------------------
@pytest.mark.emu
def test_with_status_never_waits_under_capture(emulated_gpu):
    """With a status word the op neither reads the device nor waits for it (the emulated capture fails on
    either), and flags bad bits there; without one it refuses before any launch."""
    bad, good, summed = _bad_bits("cpu")
    status, plain = ops.new_status("cpu"), summed.clone()
    with emulated_gpu.emulated_capture():
        got = ops.bsq_scale_update(good, summed, 2, 2, False, status=status)
        ops.bsq_scale_update(bad, summed.clone(), 0, 0, False, status=status)
        with emulated_gpu.recorded_launches() as launches:
            with pytest.raises(RuntimeError, match="bsq_scale_update: under CUDA graph capture, pass a status tensor"):
                ops.bsq_scale_update(good, summed.clone(), 2, 2, False)
    assert launches == []
    assert torch.equal(got, ops.bsq_scale_update(good, plain, 2, 2, False)) and torch.equal(summed, plain)
    with pytest.raises(RuntimeError, match="bits must be 0 or 1"):
        ops.check_status(status, 0)
