"""The Phi kernel's launch-plan edges: batches large enough that a block holds several rows of an image
(multi-row tiles, tile_rows > 1, with a shorter last tile). With the emulated device's 132 SMs the plan
wants ceil(264 / B) tiles per image, so the small batches of test_quant.py always get one-row tiles, on
which a tile's first row index and its block index coincide. Written for the mutants of
tests/emu/mutants.py that survived there (docs/mutation-testing.md)."""
import pytest
import torch

from conftest import tol
from var_fast import ops
from var_fast.native import extension as _ext
from var_fast.reference import quant as ref

pytestmark = pytest.mark.skipif(not _ext.available(), reason=f"var_fast._C not built: {_ext.load_error()}")


# (B, C, H, W): 32 images -> 9 tiles wanted -> 2 rows per tile of 17 (9 tiles, the last one 1 row);
# 64 -> 5 tiles -> 3 rows of 13 (the last tile 1 row); 40 x 9 channels: two output-channel blocks.
@pytest.mark.parametrize("B,C,H,W", [(32, 7, 17, 17), (64, 4, 13, 10), (40, 9, 12, 12)])
def test_phi_blend_multi_row_tiles(kernel_device, B, C, H, W):
    g = torch.Generator().manual_seed(B * C + H)
    h = torch.randn(B, C, H, W, generator=g)
    weight = torch.randn(C, C, 3, 3, generator=g) / (3 * C**0.5)
    bias = torch.randn(C, generator=g)
    got = ops.phi_blend(h.to(kernel_device), weight.to(kernel_device), bias.to(kernel_device), 0.5)
    torch.testing.assert_close(got.cpu(), ref.phi_blend(h, weight, bias, 0.5), **tol(torch.float32))


# A NaN code makes torch.argmin (the reference) answer that code in every row. The kernels certify no row
# early then (the codebook's max norm is NaN) and the exact re-check must leave every row to the
# reference's fallback: a lane whose own codes are all finite still sees `finite == false` for the warp
# (__all_sync) and must not write a token, even when its finite codes hold a clear winner.
@pytest.mark.parametrize("nan_code", [40, 3, 63])
def test_nearest_code_nan_code_wins_every_row(device, nan_code):
    """nearest_code_refine_kernel's write guard `lane == 0 && finite && upper_index >= 0`: rows whose
    nearest finite code is far ahead of the others (disjoint exact intervals), with one NaN code."""
    g = torch.Generator().manual_seed(nan_code)
    codebook = torch.randn(64, 8, generator=g)
    winners = torch.tensor([0, 1, 16, 17, 33, 48, 62])
    z = codebook[winners] + 1e-3 * torch.randn(len(winners), 8, generator=g)
    codebook[nan_code, 5] = float("nan")
    z, codebook = z.to(device), codebook.to(device)
    want = ref.nearest_code(z, codebook)
    assert want.tolist() == [nan_code] * len(winners)  # torch.argmin answers the NaN
    assert torch.equal(ops.nearest_code(z, codebook), want)


# Midpoints of two random codes with many channels: the two distances differ only by rounding, and at
# C >= 128 the CPU's BLAS (MKL) sums the channels in another order than the kernels' FMA chain, so the
# kernels' own float32 argmin differs from the reference's in many rows. The merge of the partial
# arg-mins must keep the runner-up distance (the other tied code) so that those rows fail the first
# certification and go to the exact re-check and the reference's fallback.
@pytest.mark.parametrize("N,C", [(1, 256), (7, 384), (300, 512)])
def test_nearest_code_rounding_ties_with_many_channels(device, N, C):
    """top2_merge's runner-up `fminf(winner.second, loser.best)` (the lanes' and the code splits' merges):
    near-tied rows whose tied codes sit in different lanes, at the shapes where the device's GEMM and the
    kernels' channel order round differently."""
    g = torch.Generator().manual_seed(N + C)
    codebook = torch.randn(64, C, generator=g)
    a = torch.randint(0, 64, (N,), generator=g)
    b = (a + 1 + torch.randint(0, 63, (N,), generator=g)) % 64  # two different codes per row
    z = ((codebook[a] + codebook[b]) / 2).to(device)
    codebook = codebook.to(device)
    assert torch.equal(ops.nearest_code(z, codebook), ref.nearest_code(z, codebook))
