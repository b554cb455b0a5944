"""The public Sampler API on the reference backend: labels, seeds, encode/decode, errors."""
import copy

import pytest
import torch

import var_fast
from var_fast.precision import default_dtype, resolve_dtype
from model_factory import make_models, save_pair


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    var, vae = make_models("d2")
    return var_fast.load(*save_pair(var, vae, str(tmp_path_factory.mktemp("api"))), device="cpu",
                         backend="reference")


def test_shapes_and_range(sampler):
    images, tokens = sampler.sample([0, 5, 9], cfg=1.5, top_k=10, top_p=0.9, seed=0, return_tokens=True)
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert [tuple(t.shape) for t in tokens] == [(3, pn * pn) for pn in sampler.patch_nums]
    assert all(t.dtype == torch.int64 and t.min() >= 0 and t.max() < 64 for t in tokens)


def test_seed_reproducible_and_seed_sensitive(sampler):
    a = sampler.sample([1, 2, 3, 4], seed=11, top_k=20)
    b = sampler.sample([1, 2, 3, 4], seed=11, top_k=20)
    c = sampler.sample([1, 2, 3, 4], seed=12, top_k=20)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("labels,batch_size,expected", [
    (3, None, [3]), (3, 4, [3, 3, 3, 3]), ([1, 2], None, [1, 2]), (torch.tensor([4, 0]), None, [4, 0]),
    (-1, 2, [10, 10]), ([2, -1], None, [2, 10]),
])
def test_label_forms(sampler, labels, batch_size, expected):
    _, tokens = sampler.sample(labels, batch_size=batch_size, seed=0, return_tokens=True)
    assert tokens[0].shape[0] == len(expected)
    ref, ref_tokens = sampler.sample(torch.tensor(expected), seed=0, return_tokens=True)
    assert all(torch.equal(x, y) for x, y in zip(tokens, ref_tokens))


def test_random_labels_follow_seed(sampler):
    a = sampler.sample(None, batch_size=3, seed=5)
    b = sampler.sample(None, batch_size=3, seed=5)
    assert a.shape[0] == 3 and torch.equal(a, b)


def test_class_changes_output(sampler):
    a = sampler.sample([1], seed=0, top_k=1)
    b = sampler.sample([2], seed=0, top_k=1)
    assert not torch.equal(a, b)


def test_decode_of_sampled_tokens_is_the_sampled_image(sampler):
    images, tokens = sampler.sample([3, 7], seed=2, top_k=10, return_tokens=True)
    torch.testing.assert_close(sampler.decode(tokens), images, rtol=0, atol=1e-6)


def test_encode_decode_round_trip(sampler):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    tokens = sampler.encode(x)
    assert [tuple(t.shape) for t in tokens] == [(2, pn * pn) for pn in sampler.patch_nums]
    recon = sampler.decode(tokens)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
    # re-encoding the features of the reconstruction's own tokens is stable: decode is deterministic
    assert torch.equal(sampler.decode(tokens), recon)


@pytest.mark.parametrize("kwargs,match", [
    (dict(top_p=1.5), "top_p must be in"), (dict(top_p=-0.1), "top_p must be in"),
    (dict(top_k=-3), "top_k must be"), (dict(cfg=float("nan")), "cfg must be"), (dict(cfg=-1.0), "cfg must be"),
])
def test_bad_sampling_arguments(sampler, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sampler.sample([1], **kwargs)


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64, 1.5, "0", True])
@pytest.mark.parametrize("method", ["sample", "edit"])
def test_seed_out_of_range_is_refused(sampler, seed, method):
    with pytest.raises(ValueError, match=r"seed must be an integer with 0 <= seed < 2\*\*63"):
        if method == "sample":
            sampler.sample([1], seed=seed)
        else:
            sampler.edit(torch.rand(1, 3, 64, 64), torch.zeros(64, 64), seed=seed)


def test_largest_seed_is_accepted(sampler):
    assert sampler.sample([1], seed=2**63 - 1).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("labels,match", [
    ([11], "label 11 is out of range"), ([0, 12], "label 12 is out of range"), ([-5], "label -5 is out of range"),
    (torch.tensor([1.0]), "integer tensor"), ([], "non-empty"), ("cat", "non-empty list of ints"),
    (3.5, "labels must be an int, a non-empty list of ints or an integer tensor, got 3.5"),
    ([1.0], "labels must be an int"), (-2, "label -2 is out of range"), ([-2], "label -2 is out of range"),
    (True, "labels must be an int"),
])
def test_bad_labels(sampler, labels, match):
    with pytest.raises(ValueError, match=match):
        sampler.sample(labels)


def test_only_minus_one_is_unconditional(sampler):
    with pytest.raises(ValueError, match=r"\(-1 or 10 for the unconditional class\)"):
        sampler.sample(-2)
    _, tokens = sampler.sample(-1, seed=0, return_tokens=True)
    _, expected = sampler.sample(10, seed=0, return_tokens=True)
    assert all(torch.equal(x, y) for x, y in zip(tokens, expected))


def test_integer_scalars_are_labels(sampler):
    np = pytest.importorskip("numpy")
    _, tokens = sampler.sample(np.int64(3), seed=0, return_tokens=True)
    _, expected = sampler.sample(3, seed=0, return_tokens=True)
    assert all(torch.equal(x, y) for x, y in zip(tokens, expected))


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"^unknown model d17; known: d16, d20, d24, d30, d36"):
        var_fast.load("d17")
    with pytest.raises(ValueError, match=r"^unknown model var_d16; known: d16"):
        var_fast.load("var_d16")


def test_one_checkpoint_file_alone(tmp_path):
    with pytest.raises(ValueError, match="pass both var_ckpt and vae_ckpt"):
        var_fast.load(str(tmp_path / "var_d16.pth"))


def test_batch_size_mismatch(sampler):
    with pytest.raises(ValueError, match="does not match the 2 labels"):
        sampler.sample([1, 2], batch_size=3)


@pytest.mark.parametrize("shape,match", [((1, 3, 32, 32), "must be 64x64"), ((1, 1, 64, 64), r"\(B, 3, H, W\)")])
def test_encode_rejects_bad_images(sampler, shape, match):
    with pytest.raises(ValueError, match=match):
        sampler.encode(torch.rand(shape))


def test_decode_rejects_bad_tokens(sampler):
    tokens = sampler.encode(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="one token map per scale"):
        sampler.decode(tokens[:-1])
    bad = [t.clone() for t in tokens]
    bad[2][0, 0] = 64
    with pytest.raises(ValueError, match=r"tokens\[2\] has indices outside"):
        sampler.decode(bad)
    with pytest.raises(ValueError, match=r"tokens\[1\] must have shape"):
        sampler.decode([tokens[0], tokens[2], tokens[2], tokens[3]])


def test_no_gpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the no-GPU error cannot occur")
    var, vae = make_models("d2")
    with pytest.raises(RuntimeError, match=r"no CUDA GPU is available .*; use device='cpu'"):
        var_fast.load(*save_pair(var, vae, str(tmp_path)), device="cuda")


def test_bad_backend_and_dtype(tmp_path):
    var, vae = make_models("d2")
    paths = save_pair(var, vae, str(tmp_path))
    with pytest.raises(ValueError, match="backend must be one of"):
        var_fast.load(*paths, device="cpu", backend="turbo")
    with pytest.raises(ValueError, match="dtype must be"):
        var_fast.load(*paths, device="cpu", dtype=torch.int8)


# ---- the compute dtype: None / "auto" is bfloat16 on CUDA, float32 on the CPU ------------------------------
@pytest.mark.parametrize("dtype,device,expected", [
    (None, "cpu", torch.float32), ("auto", "cpu", torch.float32), (None, "cuda", torch.bfloat16),
    ("auto", torch.device("cuda", 1), torch.bfloat16), (None, None, torch.float32),
    ("float32", "cuda", torch.float32), ("bf16", "cpu", torch.bfloat16), (torch.float16, "cuda", torch.float16),
])
def test_dtype_resolution(dtype, device, expected):
    assert resolve_dtype(dtype, device) == expected
    if dtype is None:
        assert default_dtype(device) == expected


def test_bad_dtype_names_say_auto_is_allowed():
    with pytest.raises(ValueError, match="'auto'"):
        resolve_dtype("bfloat", "cpu")


def test_default_dtype_on_the_cpu_is_float32_and_token_identical(sampler, tmp_path):
    assert sampler.dtype == torch.float32  # the module's sampler: var_fast.load without dtype
    var, vae = make_models("d2")
    explicit = var_fast.load(*save_pair(var, vae, str(tmp_path)), device="cpu", dtype=torch.float32,
                             backend="reference")
    a, ta = sampler.sample([1, 4], seed=3, top_k=20, return_tokens=True)
    b, tb = explicit.sample([1, 4], seed=3, top_k=20, return_tokens=True)
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(ta, tb))
    assert var_fast.Sampler(var, vae, device=torch.device("cpu"), backend="reference").dtype == torch.float32


def test_decode_in_the_compute_dtype_and_channels_last(sampler):
    _, tokens = sampler.sample([2, 3], seed=0, top_k=20, return_tokens=True)
    plain = sampler.decode(tokens)
    with torch.no_grad():  # float32 on the CPU: what decode did before the compute dtype applied to it
        before = sampler.vae.idx_to_img(tokens).add_(1).mul_(0.5)
    assert torch.equal(plain, before)
    low = var_fast.Sampler(sampler.var, copy.deepcopy(sampler.vae), device=torch.device("cpu"), dtype=torch.bfloat16,
                           backend="reference")
    got = low.decode(tokens)
    assert got.dtype == torch.float32 and not torch.equal(got, plain)  # the decoder ran in bfloat16
    assert (got - plain).abs().max() < 0.1
    cl = var_fast.Sampler(sampler.var, copy.deepcopy(sampler.vae), device=torch.device("cpu"), backend="reference",
                          channels_last=True)
    images = cl.decode(tokens)
    assert cl.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(images, plain, atol=1e-5, rtol=1e-5)
