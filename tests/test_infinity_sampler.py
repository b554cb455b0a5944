"""InfinitySampler on tiny random models and the tiny T5: images keyed by (seed, image index) whatever the
batch, image 0 of a seed is upstream's g_seed run (var_fast's reference sampler, itself checked against
upstream's outputs in the port's tests), negative prompts, offload and dtype options, and bad arguments
refused before any work."""
import os

import pytest
import torch

pytest.importorskip("transformers")

import var_fast  # noqa: E402
from infinity_factory import make_models, save_state_dict  # noqa: E402
from var_fast.infinity import infer_reference, scale_schedule  # noqa: E402
from var_fast.infinity.sampler import InfinitySampler, image_seed  # noqa: E402

TINY_T5 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "infinity_tiny_t5")
PROMPTS = ["a dog", "a red cat sitting on a mat, photo", "a dog", "sunset"]
KW = dict(pixels="0.06M", top_k=2, top_p=0.9, cfg=3.0, tau=1.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_infinity")
    model, vae = make_models("2b")
    return (save_state_dict(model, str(folder / "infinity_2b_reg.pth")),
            save_state_dict(vae, str(folder / "infinity_vae_d32reg.pth")))


@pytest.fixture(scope="module")
def sampler(files):
    return var_fast.load(transformer=files[0], vae=files[1], text_encoder=TINY_T5, device="cpu")


def test_load_returns_an_infinity_sampler(sampler, files):
    assert isinstance(sampler, InfinitySampler)
    assert sampler.source == (files[0], files[1], TINY_T5)
    assert sampler.dtype == torch.float32 and sampler.text_encoder.dtype == torch.float32


def test_images_do_not_depend_on_the_batch(sampler):
    runs = [sampler.sample(PROMPTS, seed=7, batch_size=b, **KW) for b in (1, 2, 3)]
    assert runs[0].shape == (4, 3, *sampler.image_size(1.0, "0.06M"))
    assert runs[0].dtype == torch.float32 and 0 <= runs[0].min() and runs[0].max() <= 1
    for other in runs[1:]:
        assert torch.equal(runs[0], other)
    assert not torch.equal(runs[0][0], runs[0][2])  # the same prompt, its own stream per image


def test_image_streams_are_the_reference_samplers(sampler):
    """image 0 of seed s is infer_reference(seed=s) at B=1 (upstream's g_seed); image i draws from
    image_seed(s, i); image_offset continues the run."""
    images, bits = sampler.sample(PROMPTS[:2], seed=11, return_bits=True, **KW)
    schedule = scale_schedule(1.0, "0.06M")
    cond = sampler.text_encoder.encode(PROMPTS[:2])
    first = infer_reference(sampler.model, sampler.vae, cond.select([0]), schedule, cfg_list=3.0, tau_list=1.0,
                            top_k=2, top_p=0.9, seed=11)
    assert torch.equal(images[0], first.images[0].permute(2, 0, 1).float() / 255)
    assert all(torch.equal(b[:1], r) for b, r in zip(bits, first.bits))
    second = infer_reference(sampler.model, sampler.vae, cond.select([1]), schedule, cfg_list=3.0, tau_list=1.0,
                             top_k=2, top_p=0.9, image_seeds=[image_seed(11, 1)])
    assert torch.equal(images[1], second.images[0].permute(2, 0, 1).float() / 255)
    shifted = sampler.sample(PROMPTS[1:2], seed=11, image_offset=1, **KW)
    assert torch.equal(shifted[0], images[1])


def test_negative_prompt(sampler):
    plain = sampler.sample(PROMPTS[:2], seed=3, **KW)
    empty = sampler.sample(PROMPTS[:2], seed=3, negative_prompt="", **KW)  # upstream's '' = none
    negative = sampler.sample(PROMPTS[:2], seed=3, negative_prompt="blurry, low quality", **KW)
    assert torch.equal(plain, empty) and not torch.equal(plain, negative)
    schedule = scale_schedule(1.0, "0.06M")
    cond = sampler.text_encoder.encode([PROMPTS[1], "blurry, low quality"])
    ref = infer_reference(sampler.model, sampler.vae, cond.select([0]), schedule, negative=cond.select([1]),
                          cfg_list=3.0, tau_list=1.0, top_k=2, top_p=0.9, image_seeds=[image_seed(3, 1)])
    assert torch.equal(negative[1], ref.images[0].permute(2, 0, 1).float() / 255)


@pytest.mark.parametrize("offload", ["cpu", "free"])
def test_text_encoder_offload_changes_nothing(sampler, files, offload):
    other = var_fast.load(transformer=files[0], vae=files[1], text_encoder=TINY_T5, device="cpu",
                          text_encoder_offload=offload)
    assert torch.equal(other.sample(PROMPTS[:2], seed=5, **KW), sampler.sample(PROMPTS[:2], seed=5, **KW))
    assert other.text_encoder.loaded == (offload == "cpu")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights(files, dtype):
    half = var_fast.load(transformer=files[0], vae=files[1], text_encoder=TINY_T5, device="cpu", dtype=dtype)
    assert half.dtype == dtype
    # upstream's bf16=1: the blocks' weights in half precision (their norms' values rounded, held in float32)
    block = half.model.all_blocks()[0]
    assert block.sa.mat_qkv.weight.dtype == dtype and block.ffn.fc1.weight.dtype == dtype
    assert block.ca_norm.weight.dtype == torch.float32
    assert torch.equal(block.ca_norm.weight, block.ca_norm.weight.to(dtype).float())
    assert half.model.pos_start.dtype == torch.float32 and next(half.vae.parameters()).dtype == torch.float32
    images = half.sample(PROMPTS[:1], seed=1, **KW)
    assert images.dtype == torch.float32 and images.shape == (1, 3, *half.image_size(1.0, "0.06M"))


@pytest.mark.parametrize("aspect_ratio,pixels", [(1.0, "0.06M"), (0.5, "0.06M"), ("16:9", "0.06M"), (2.0, "0.25M")])
def test_aspect_ratio_and_pixels(sampler, aspect_ratio, pixels):
    images = sampler.sample(PROMPTS[:1], seed=0, aspect_ratio=aspect_ratio, pixels=pixels, top_k=2)
    assert images.shape[-2:] == sampler.image_size(aspect_ratio, pixels)
    h, w = images.shape[-2:]
    if aspect_ratio == 0.5 or aspect_ratio == "16:9":
        assert w > h


BAD = [
    (dict(prompts="x", ), None),
    (dict(prompts=[]), "non-empty list of strings"),
    (dict(prompts=["a dog", ""]), r"prompts\[1\] is empty"),
    (dict(prompts=["a dog", None]), r"prompts\[1\] must be a string"),
    (dict(prompts=("a", 3)), r"prompts\[1\] must be a string"),
    (dict(aspect_ratio=10), "out of range"),
    (dict(aspect_ratio=0.1), "out of range"),
    (dict(aspect_ratio=-1), "positive finite"),
    (dict(aspect_ratio="wide"), "expected 'W:H'"),
    (dict(pixels="2M"), "pixels must be one of 0.06M, 0.25M, 0.60M, 1M"),
    (dict(cfg=[3.0, 3.0]), r"cfg must be one number or one per scale \(7 scales\), got 2 values"),
    (dict(cfg=-1), "cfg must be finite numbers >= 0"),
    (dict(tau=0), "tau must be finite numbers > 0"),
    (dict(tau=[1.0] * 8), "one per scale"),
    (dict(top_k=-1), "top_k must be an integer >= 0"),
    (dict(top_k=1.5), "top_k must be an integer >= 0"),
    (dict(top_p=1.5), r"top_p must be in \[0, 1\]"),
    (dict(cfg_insertion_layer=1), "cfg_insertion_layer must be 0"),
    (dict(cfg_insertion_layer=-4), "out of range: this model has 4 blocks"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(seed=-1), "seed"),
    (dict(sampling_per_bits=3), "sampling_per_bits must be one of"),
    (dict(negative_prompt=5), "negative_prompt must be a string"),
    (dict(image_offset=-1), "image_offset must be an integer >= 0"),
]


@pytest.mark.parametrize("kwargs,message", BAD)
def test_bad_arguments_fail_before_any_work(sampler, monkeypatch, kwargs, message):
    def no_work(*a, **k):
        raise AssertionError("work started before the arguments were checked")
    monkeypatch.setattr(sampler.text_encoder, "encode", no_work)
    kwargs = dict(kwargs)
    prompts = kwargs.pop("prompts", ["a dog"])
    if message is None:  # a single string is one prompt: checks pass, then the encoder is called
        with pytest.raises(AssertionError, match="work started"):
            sampler.sample(prompts, pixels="0.06M")
        return
    args = dict(pixels="0.06M")
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        sampler.sample(prompts, **args)


def test_auto_batch_size_is_positive(sampler):
    assert sampler.auto_batch_size(scale_schedule(1.0, "0.06M")) >= 1


@pytest.mark.parametrize("kwargs,message", [
    (dict(transformer="x.pth"), "needs transformer=, vae= and text_encoder="),
    (dict(transformer="nowhere.pth", vae="nowhere.pth", text_encoder=TINY_T5), "does not exist"),
])
def test_load_errors(kwargs, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        var_fast.load(device="cpu", **kwargs)


def test_load_rejects_var_arguments_for_infinity():
    with pytest.raises(ValueError, match="VAR's"):
        var_fast.load("infinity-2b", refiner="d16")
    with pytest.raises(ValueError, match="backend must be"):
        var_fast.load("infinity-2b", backend="native")


def test_fast_backend(files, sampler):
    """backend="fast": the reference's greedy images; seeded images independent of the batch and its size."""
    fast = var_fast.load(transformer=files[0], vae=files[1], text_encoder=TINY_T5, device="cpu", backend="fast")
    assert fast.backend == "fast" and sampler.backend == "reference"
    greedy = dict(KW, top_k=1)
    assert torch.equal(fast.sample(PROMPTS, seed=1, **greedy), sampler.sample(PROMPTS, seed=2, **greedy))
    whole, bits = fast.sample(PROMPTS, seed=7, return_bits=True, **KW)
    split = fast.sample(PROMPTS, seed=7, batch_size=3, **KW)
    tail, tail_bits = fast.sample(PROMPTS[1:], seed=7, image_offset=1, return_bits=True, **KW)
    assert torch.equal(whole, split) and torch.equal(whole[1:], tail)
    assert all(torch.equal(a[1:], b) for a, b in zip(bits, tail_bits))
    assert not torch.equal(whole[0], whole[2])  # the same prompt, its own stream per image


def test_batched_passes(sampler):
    """batched=True: one pass per batch, each image with its own generator; at batch size 1 it is the exact path."""
    exact = sampler.sample(PROMPTS, seed=9, **KW)
    assert torch.equal(sampler.sample(PROMPTS, seed=9, batched=True, batch_size=1, **KW), exact)
    together = sampler.sample(PROMPTS, seed=9, batched=True, batch_size=4, **KW)
    assert together.shape == exact.shape
    # per-image streams: the same prompt at two indices still gives two different images
    assert not torch.equal(together[0], together[2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_cache_formula_matches_the_models_cache(sampler, files, monkeypatch, dtype):
    """The memory estimate's self-attention KV cache (depth x 2B x L x C x (4 + bytes): K in float32, V in the
    compute dtype) is what the model holds at the last scale: counted on the cache tensors just before the
    sampler releases them."""
    from var_fast.infinity.blocks import SelfAttention
    from var_fast.infinity.memory import TEXT_TOKENS, per_image_bytes
    s = sampler if dtype == torch.float32 else var_fast.load(transformer=files[0], vae=files[1],
                                                              text_encoder=TINY_T5, device="cpu", dtype=dtype)
    held = []
    original = SelfAttention.reset_cache

    def count(self):
        if self.cached_k is not None:
            held.append(self.cached_k.numel() * self.cached_k.element_size()
                        + self.cached_v.numel() * self.cached_v.element_size())
        original(self)
    monkeypatch.setattr(SelfAttention, "reset_cache", count)
    s.sample(PROMPTS[:1], seed=0, **KW)
    schedule = scale_schedule(1.0, "0.06M")
    kv, _, _ = per_image_bytes(s.shapes(), schedule, str(dtype).replace("torch.", ""), cfg=True)
    c = s.config
    text_part = c.depth * 2 * TEXT_TOKENS * 2 * c.embed_dim * torch.finfo(dtype).bits // 8
    assert len(held) == c.depth and sum(held) == kv - text_part
