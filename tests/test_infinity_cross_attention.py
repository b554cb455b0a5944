"""The fast loop's cross-attention (var_fast/infinity/fast_cross_attention.py) against the reference's
``blocks.varlen_attention`` / ``CrossAttention.forward``: the "loop" variant bit for bit, the "padded"
variant up to one bf16 ulp on a few elements (its float32 sums differ in the last bits before the
output's bf16 rounding)."""
import math

import pytest
import torch

from var_fast.infinity import fast_cross_attention as fca
from var_fast.infinity.blocks import CrossAttention, varlen_attention

# (prompt lengths, queries per prompt): different lengths, one-token prompts, a CFG-doubled batch
# (conditional prompts then the same number of unconditional ones, as infer_reference concatenates them).
CASES = [
    pytest.param([7], 1, id="one-prompt-L1"),
    pytest.param([5, 17, 9], 15, id="three-lengths-odd-L"),
    pytest.param([12, 30, 1, 1], 36, id="cfg-doubled-empty-negative"),
    pytest.param([40, 3, 25, 40, 3, 25], 9, id="cfg-doubled-same-negative"),
    pytest.param([77, 120, 64, 2], 64, id="longer-prompts"),
]


def _compact(lens, H, c, seed):
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(sum(lens), H, c, generator=gen)
    v = torch.randn(sum(lens), H, c, generator=gen)
    return k, v


def _queries(B, L, H, c, seed):
    return torch.randn(B, L, H * c, generator=torch.Generator().manual_seed(seed)) * 2


def _reference(q, k, v, lens, scale):
    B, L, C = q.shape
    H, c = k.shape[1:]
    return varlen_attention(q.reshape(-1, H, c), k, v, [L] * B, lens, scale).reshape(B, L, C)


def _bf16_ulps(a, b):
    """Elementwise distance in bf16 ulps of two float32 tensors holding bf16 values of the same sign."""
    ia = a.to(torch.bfloat16).view(torch.int16).int()
    ib = b.to(torch.bfloat16).view(torch.int16).int()
    assert torch.equal(a.to(torch.bfloat16).float(), a) and torch.equal(b.to(torch.bfloat16).float(), b)
    return (ia - ib).abs()


@pytest.mark.parametrize("H,c", [(2, 64), (4, 32), (1, 128)])
@pytest.mark.parametrize("lens,L", CASES)
def test_loop_equals_varlen_attention_bitwise(lens, L, H, c):
    k, v = _compact(lens, H, c, seed=1)
    q = _queries(len(lens), L, H, c, seed=2)
    kv = fca.TextKV.from_compact(k, v, lens)
    scale = 1 / math.sqrt(c)
    assert torch.equal(fca.attend(q, kv, scale, "loop"), _reference(q, k, v, lens, scale))


@pytest.mark.parametrize("H,c", [(2, 64), (4, 32), (1, 128)])
@pytest.mark.parametrize("lens,L", CASES)
def test_padded_equals_varlen_attention_up_to_one_bf16_ulp(lens, L, H, c):
    k, v = _compact(lens, H, c, seed=3)
    q = _queries(len(lens), L, H, c, seed=4)
    kv = fca.TextKV.from_compact(k, v, lens)
    scale = 1 / math.sqrt(c)
    got, expected = fca.attend(q, kv, scale, "padded"), _reference(q, k, v, lens, scale)
    ulps = _bf16_ulps(got, expected)
    # both round the same float32 value up to a few float32 ulps: at most one bf16 ulp apart, and rarely
    assert ulps.max() <= 1 and ulps.float().mean() < 1e-2, (ulps.max(), ulps.float().mean())


def test_padding_and_masked_keys_do_not_leak():
    # Huge values past a prompt's length in the compact tensors of *another* prompt must not reach this one;
    # and the padded layout holds zeros (never NaN) past each length.
    lens, H, c, L = [3, 9], 2, 16, 4
    k, v = _compact(lens, H, c, seed=5)
    kv = fca.TextKV.from_compact(k, v, lens)
    assert torch.equal(kv.k[0, :, 3:], torch.zeros(H, 6, c)) and torch.equal(kv.v[0, :, 3:], torch.zeros(H, 6, c))
    assert kv.key_mask.shape == (2, 1, 1, 9) and kv.key_mask[0, 0, 0].tolist() == [True] * 3 + [False] * 6
    q = _queries(2, L, H, c, seed=6)
    for variant in fca.VARIANTS:
        k2, v2 = k.clone(), v.clone()
        k2[3:] *= 100  # prompt 1's keys only: prompt 0's output must not change
        v2[3:] += 1000
        a = fca.attend(q, fca.TextKV.from_compact(k, v, lens), 0.25, variant)
        b = fca.attend(q, fca.TextKV.from_compact(k2, v2, lens), 0.25, variant)
        assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])


@pytest.mark.parametrize("variant", fca.VARIANTS)
def test_cross_attention_module_matches_reference_forward(variant):
    """fca.cross_attention with TextKV.project (once per batch) = CrossAttention.forward (projecting per call),
    on a CFG-doubled batch of prompts of different lengths, at two scales."""
    torch.manual_seed(0)
    C, H = 128, 2
    ca = CrossAttention(C, C, H)
    with torch.no_grad():
        ca.v_bias.normal_(0, 0.5)
    lens = [6, 11, 1, 1]
    text = torch.randn(sum(lens), C)
    kv = fca.TextKV.project(ca, text, lens)
    with torch.no_grad():
        for L in (1, 15):
            x = torch.randn(len(lens), L, C)
            expected = ca(x, ca.project_kv(text), lens)
            got = fca.cross_attention(ca, x, kv, variant)
            if variant == "loop":
                assert torch.equal(got, expected)
            else:  # one bf16 ulp on a few attention outputs, then the projection
                torch.testing.assert_close(got, expected, rtol=2 ** -7, atol=2 ** -7)


def test_choose_variant_is_a_variant():
    for device in (torch.device("cpu"), torch.device("cuda")):
        assert fca.choose_variant(device) in fca.VARIANTS
    assert fca.choose_variant(torch.device("cpu")) == "loop"  # the exact one, and the faster on the CPU


def test_bad_inputs():
    k, v = _compact([2, 3], 2, 8, seed=7)
    with pytest.raises(ValueError, match="lens must be >= 1 each and sum to k's 5 rows"):
        fca.TextKV.from_compact(k, v, [2, 2])
    with pytest.raises(ValueError, match="lens must be >= 1"):
        fca.TextKV.from_compact(k, v, [5, 0])
    with pytest.raises(ValueError, match="k and v must both be"):
        fca.TextKV.from_compact(k, v[:4], [2, 3])
    kv = fca.TextKV.from_compact(k, v, [2, 3])
    with pytest.raises(ValueError, match="do not match the text keys: 2 prompts, 2 heads of 8"):
        fca.attend(torch.zeros(3, 4, 16), kv, 0.3, "loop")
    with pytest.raises(ValueError, match="do not match"):
        fca.attend(torch.zeros(2, 4, 15), kv, 0.3, "padded")
    with pytest.raises(ValueError, match="unknown cross-attention variant 'flash'"):
        fca.attend(torch.zeros(2, 4, 16), kv, 0.3, "flash")
