"""The fast Infinity loop (var_fast/infinity/fast_sampler.py) against the reference loop and upstream's golden
outputs: greedy bits equal at every scale (float32, on the CPU and on the emulated CUDA kernels), both CFG
placements, patchify, odd bit counts, RMS-norm/SwiGLU models; seeded draws independent of the batch and
distributed as the reference's filtered bit probabilities; bad input rejected before any work; bad logits
reported after the loop."""
import pytest
import torch

import infinity_golden as golden
from infinity_factory import _mean_std, make_models, random_text
from model_factory import fill_deterministic
from var_fast.infinity import BSQVAE, BSQVAEConfig, Infinity, InfinityConfig, TextCondition, infer_reference
from var_fast.infinity import reference_sampler
from var_fast.infinity.fast_sampler import InfinityFastSampler
from var_fast.infinity.loading import bsq_vae_from_state_dict, infinity_from_state_dict
from var_fast.infinity.schedules import scale_schedule

GREEDY = [c["name"] for c in golden.cases() if c["top_k"] == 1]
BATCH_CASES = [c["name"] for c in golden.cases() if c["seed_group"] is None]


@pytest.fixture(scope="module")
def golden_models():
    out = {}
    for name in golden.model_names():
        cfg = golden.model_config(name)
        model = infinity_from_state_dict(golden.transformer_state_dict(name), f"golden {name}",
                                         rope2d_normalized_by_hw=cfg["rope2d_normalized_by_hw"],
                                         add_lvl_embeding_only_first_block=cfg["add_lvl_embeding_only_first_block"])
        out[name] = (model.eval(), bsq_vae_from_state_dict(golden.vae_state_dict(name), f"golden {name} VAE").eval())
    return out


def _text(record):
    return None if record is None else TextCondition(record["kv_compact"], record["lens"])


def _args(case, **over):
    kw = dict(negative=_text(case["negative"]), cfg_list=case["cfg_list"], tau_list=case["tau_list"],
              top_k=case["top_k"], top_p=case["top_p"], cfg_insertion_layer=case["cfg_insertion_layer"])
    kw.update(over)
    return kw


def _assert_same_bits(fast, ref):
    assert len(fast.bits) == len(ref.bits)
    for si, (a, b) in enumerate(zip(fast.bits, ref.bits)):
        assert a.shape == b.shape and a.dtype == torch.int64, f"scale {si}: {a.shape} {a.dtype} vs {b.shape}"
        assert torch.equal(a, b), f"scale {si}: the bits differ"


@pytest.mark.parametrize("name", GREEDY)
def test_greedy_golden_cases(golden_models, device, name):
    """Upstream's own greedy runs: the same bits at every scale, summed codes and image bytes."""
    case = golden.case(name)
    model, vae = golden_models[case["model"]]
    out = InfinityFastSampler(model, vae).sample(_text(case["cond"]), golden.schedule(case), seed=11, **_args(case))
    for si, (mine, up) in enumerate(zip(out.bits, case["bits"])):
        assert torch.equal(mine.to(torch.uint8), up), f"scale {si}: the bits differ from upstream's"
    torch.testing.assert_close(out.summed_codes, case["summed_codes"], rtol=0, atol=0)
    golden.assert_images_are_upstreams(out.images, case)


@pytest.mark.parametrize("name", BATCH_CASES)
def test_greedy_matches_reference_on_every_golden_setting(golden_models, name):
    """Every golden case's settings (negative prompts, learned unconditional embedding, CFG on the logits and at
    a layer, per-scale cfg/tau, batches, aspect ratios, patchify) with top_k=1: the reference's bits (on the first
    6 of the 7 scales: the last one holds most of the time, and the full schedules are checked above)."""
    case = golden.case(name)
    model, vae = golden_models[case["model"]]
    cond, sched = _text(case["cond"]), golden.schedule(case)[:6]
    kw = _args(case, top_k=1, cfg_list=case["cfg_list"][:6], tau_list=case["tau_list"][:6])
    ref = infer_reference(model, vae, cond, sched, seed=0, decode=False, **kw)
    fast = InfinityFastSampler(model, vae).sample(cond, sched, seed=5, decode=False, **kw)
    _assert_same_bits(fast, ref)
    assert torch.equal(fast.summed_codes, ref.summed_codes)


def _odd_models(seed=3):
    """Odd bit counts (7 bits per token), three block chunks with the level embedding before each."""
    model = Infinity(InfinityConfig(depth=3, embed_dim=64, num_heads=2, mlp_hidden=128, text_channels=256,
                                    pool_heads=2, d_vae=7, block_chunks=3, add_lvl_embeding_only_first_block=0))
    vae = BSQVAE(BSQVAEConfig(codebook_dim=7, ch=24, encoder_ch_mult=(1, 2), decoder_ch_mult=(1, 2), num_res_blocks=1,
                              encoder_down_levels=(0,), decoder_up_levels=(1,)))
    fill_deterministic(model, seed, _mean_std)
    fill_deterministic(vae, seed + 1, _mean_std)
    return model.eval(), vae.eval()


FACTORY = {"2b": lambda: make_models("2b"), "8b_patchify": lambda: make_models("8b"),
           "2b_flat_rms_swiglu": lambda: make_models("2b_flat"), "odd_bits_lvl_every_chunk": _odd_models}


@pytest.fixture(scope="module", params=sorted(FACTORY))
def factory_pair(request):
    return request.param, FACTORY[request.param]()


@pytest.mark.parametrize("placement", [0, -1, [0, -2]])
def test_greedy_matches_reference_factory_models(factory_pair, placement):
    name, (model, vae) = factory_pair
    if placement == [0, -2] and model.cfg.depth < 3:
        placement = [0, -1]
    cond = random_text([3, 6], seed=1)
    sched = scale_schedule(0.5, "0.06M")[:5]
    kw = dict(cfg_list=[1.0, 2.0, 3.0, 1.0, 4.0], tau_list=[1.0, 0.7, 1.3, 1.0, 0.5], top_k=1,
              cfg_insertion_layer=placement, decode=False)
    ref = infer_reference(model, vae, cond, sched, seed=0, **kw)
    fast = InfinityFastSampler(model, vae).sample(cond, sched, seed=2, **kw)
    _assert_same_bits(fast, ref)
    assert torch.equal(fast.summed_codes, ref.summed_codes)


# ---- seeded sampling ----------------------------------------------------------------------------------------------
SCHED4 = scale_schedule(1.0, "0.06M")[:4]


@pytest.fixture(scope="module")
def tiny():
    return make_models("2b")


def test_image_independent_of_its_batch(tiny, device):
    model, vae = tiny
    sampler = InfinityFastSampler(model, vae)
    cond = random_text([3, 5, 4], seed=2)
    whole = sampler.sample(cond, SCHED4, seed=9, top_p=0.9, cfg_list=2.0, decode=False)
    alone = sampler.sample(cond.select([2]), SCHED4, seed=9, top_p=0.9, cfg_list=2.0, image_offset=2, decode=False)
    for si, (a, b) in enumerate(zip(whole.bits, alone.bits)):
        assert torch.equal(a[2:], b), f"scale {si}"
    assert torch.equal(whole.summed_codes[2:], alone.summed_codes)
    again = sampler.sample(cond, SCHED4, seed=9, top_p=0.9, cfg_list=2.0, decode=False)
    assert all(torch.equal(a, b) for a, b in zip(whole.bits, again.bits))
    other = sampler.sample(cond, SCHED4, seed=10, top_p=0.9, cfg_list=2.0, decode=False)
    assert not all(torch.equal(a, b) for a, b in zip(whole.bits, other.bits))


@pytest.mark.parametrize("top_k,top_p,cfg,tau", [(0, 0.0, 3.0, 1.0), (0, 0.8, 2.0, 0.5), (2, 0.0, 1.0, 1.5)])
def test_first_scale_distribution_matches_reference_probabilities(tiny, monkeypatch, top_k, top_p, cfg, tau):
    """n draws of the first scale's bits of one prompt: per-bit frequencies vs the reference's filtered
    probabilities (its logits captured where it samples)."""
    model, vae = tiny
    cond = random_text([4], seed=3)
    sched = SCHED4[:1]
    seen = []
    original = reference_sampler.sample_bits

    def spy(logits, top_k=0, top_p=0.0, rng=None):
        seen.append(logits.clone())
        return original(logits, top_k, top_p, rng)
    monkeypatch.setattr(reference_sampler, "sample_bits", spy)
    infer_reference(model, vae, cond, sched, cfg_list=cfg, tau_list=tau, top_k=top_k, top_p=top_p, seed=0, decode=False)
    logits = seen[0][0]                                             # (d, 2) of the one token
    filtered = logits.clone().unsqueeze(0)
    if top_k > 0:
        filtered = filtered.masked_fill(filtered < filtered.topk(min(top_k, 2), dim=-1)[0].amin(-1, keepdim=True), -torch.inf)
    if top_p > 0:
        s, idx = filtered.sort(dim=-1)
        rm = s.softmax(-1).cumsum(-1) <= 1 - top_p
        rm[..., -1:] = False
        filtered = filtered.masked_fill(rm.scatter(-1, idx, rm), -torch.inf)
    p1 = filtered[0].softmax(-1)[:, 1].double()
    n = 1000
    out = InfinityFastSampler(model, vae).sample(cond.select([0] * n), sched, cfg_list=cfg, tau_list=tau, top_k=top_k,
                                                 top_p=top_p, seed=17, decode=False)
    freq = out.bits[0].reshape(n, -1).double().mean(0)
    assert torch.all(freq[p1 == 0] == 0) and torch.all(freq[p1 == 1] == 1), "a filtered-out bit value was drawn"
    assert torch.all((freq - p1).abs() <= 4.5 * (p1 * (1 - p1) / n).sqrt() + 1e-9), (freq, p1)


# ---- errors -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(tau_list=0.0), "tau_list"), (dict(top_k=-1), "top_k"), (dict(top_p=1.5), "top_p"),
    (dict(cfg_list=[1.0, 2.0]), "cfg_list has 2 entries"), (dict(cfg_insertion_layer=1), "cfg_insertion_layer"),
    (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"), (dict(image_offset=-2), "image_offset"),
    (dict(schedule=[(1, 1, 1), (1, 3, 3)]), "not the start of any published template"),
    (dict(cond=random_text([2], channels=128)), "128 channels"),
    (dict(negative=random_text([2, 2, 2])), "negative has 3 prompts"),
])
def test_bad_input_raises_before_any_work(tiny, monkeypatch, kwargs, match):
    model, vae = tiny
    sampler = InfinityFastSampler(model, vae)

    def no_work(*args, **kw):
        raise AssertionError("the text condition was computed before the input was checked")
    monkeypatch.setattr(model, "condition", no_work)
    cond = kwargs.pop("cond", random_text([2, 3]))
    sched = kwargs.pop("schedule", SCHED4)
    with pytest.raises(ValueError, match=match):
        sampler.sample(cond, sched, **kwargs)


def test_bad_dtype_raises(tiny):
    with pytest.raises(ValueError, match="dtype"):
        InfinityFastSampler(*tiny, dtype=torch.int32)


def test_nan_logits_reported_after_the_loop(device, monkeypatch):
    """NaN logits do not stop the loop (nothing waits for the device): the status word raises after the last scale."""
    model, vae = make_models("2b")
    with torch.no_grad():
        model.head.bias[3] = float("nan")
    sampler = InfinityFastSampler(model, vae)
    scales = []
    original = InfinityFastSampler.scale_logits

    def counting(self, si, *args, **kw):
        scales.append(si)
        return original(self, si, *args, **kw)
    monkeypatch.setattr(InfinityFastSampler, "scale_logits", counting)
    for cfg in (1.0, 3.0):
        scales.clear()
        with pytest.raises(RuntimeError, match="NaN"):
            sampler.sample(random_text([2]), SCHED4, cfg_list=cfg, decode=False)
        assert scales == list(range(len(SCHED4)))


@pytest.mark.parametrize("dtype,name", [(torch.float32, "float32"), (torch.bfloat16, "bfloat16")])
def test_memory_estimate_counts_the_preallocated_cache(tiny, dtype, name):
    """per_image_bytes(fast=True)'s self-attention part is the fast loop's own cache tensors, per image."""
    from var_fast.infinity.fast_sampler import allocate_kv_caches
    from var_fast.infinity.memory import TEXT_TOKENS, InfinityShapes, per_image_bytes
    model, vae = tiny
    c = model.cfg
    shapes = InfinityShapes("tiny", depth=c.depth, width=c.embed_dim, heads=c.num_heads, bits=c.d_vae,
                            transformer_parameters=0, block_parameters=0, vae_parameters=0)
    total = sum(h * w for _, h, w in SCHED4)
    caches = allocate_kv_caches(InfinityFastSampler(model, vae, dtype=dtype), 2 * 3, "cpu", total)
    actual = sum(t.numel() * t.element_size() for pair in caches for t in pair) // 3
    kv, _, _ = per_image_bytes(shapes, SCHED4, name, cfg=True, fast=True)
    assert kv - c.depth * 2 * c.embed_dim * TEXT_TOKENS * 2 * 4 == actual


def test_graphed_workspace_refreshes_its_static_buffers(tiny, monkeypatch):
    """The CUDA-graph workspace's plumbing on the CPU (each "graph" replays the pass on the static buffers):
    a second call with other prompts (same token counts) reuses the workspace and gets its own condition."""
    from var_fast.infinity import fast_sampler as fs

    class Replay:
        def __init__(self, fn):
            self.replay = fn

    class EagerGraphs(fs.GraphedScales):
        def _capture(self, si):
            def run():
                self.outputs[si] = self.plan.run(si, self.inputs[si], self.static, self.caches, self.rope)
            self.graphs[si] = Replay(run)

    model, vae = tiny
    eager = InfinityFastSampler(model, vae)
    graphed = InfinityFastSampler(model, vae)
    monkeypatch.setattr(fs, "GraphedScales", EagerGraphs)
    monkeypatch.setattr(graphed, "_graphed", lambda device: True)
    kw = dict(cfg_list=[1.0, 3.0, 2.0, 3.0], tau_list=0.8, top_k=1, cfg_insertion_layer=[0, -2], decode=False)
    works = []
    for seed in (1, 2):
        cond = random_text([3, 5], seed=seed)
        a, b = eager.sample(cond, SCHED4, **kw), graphed.sample(cond, SCHED4, **kw)
        _assert_same_bits(b, a)
        assert torch.equal(a.summed_codes, b.summed_codes)
        works += list(graphed._graphs.values())
    assert len(works) == 2 and works[0] is works[1] and isinstance(works[0], EagerGraphs)
    assert sorted(works[0].graphs) == list(range(len(SCHED4)))
