"""backend="fast" (native ops) against backend="reference" on the same checkpoints."""
import pytest
import torch

import var_fast
from var_fast.fast_sampler import FastSampler, scale_seed
from var_fast.models.blocks import KVCache
from var_fast.reference.autoregressive import autoregressive_infer_cfg
from var_fast.reference.sampling import filtered_probs
from model_factory import make_models, save_pair


@pytest.fixture(scope="module", params=["d2", "d3_shared"])
def pair(request, tmp_path_factory):
    var, vae = make_models(request.param)
    paths = save_pair(var, vae, str(tmp_path_factory.mktemp(request.param)))
    return (var_fast.load(*paths, device="cpu", backend="reference"),
            var_fast.load(*paths, device="cpu", backend="fast"))


@pytest.mark.parametrize("cfg", [0.0, 1.5, 4.0])
def test_greedy_tokens_match_reference_at_every_scale(pair, cfg):
    ref, fast = pair
    assert fast.backend == "fast"
    labels = [0, 3, 3, 9, 5]
    img_r, tok_r = ref.sample(labels, cfg=cfg, top_k=1, seed=0, return_tokens=True)
    img_f, tok_f = fast.sample(labels, cfg=cfg, top_k=1, seed=123, return_tokens=True)
    for si, (a, b) in enumerate(zip(tok_r, tok_f)):
        assert torch.equal(a, b), f"scale {si}: greedy tokens differ"
    torch.testing.assert_close(img_f, img_r, rtol=0, atol=1e-4)


def test_first_scale_distribution_matches_exact_probabilities(pair):
    """4000 draws of the first token of one class: empirical vs exact filtered distribution."""
    ref, fast = pair
    var = ref.var
    label = torch.tensor([4])
    cond = var.class_emb(torch.cat((label, torch.tensor([var.num_classes]))))
    x0 = cond.unsqueeze(1) + var.pos_start + var.level_pos()[:, :1]
    with torch.no_grad():
        logits = var.forward_scale(x0, cond, [KVCache() for _ in var.blocks])[:1]  # ratio 0: no CFG mix
    exact = filtered_probs(logits[0, 0], top_k=30, top_p=0.9)
    sampler = FastSampler(fast.var, fast.vae)
    n = 4000
    _, tokens = sampler.sample(label.repeat(n), seed=7, cfg=1.5, top_k=30, top_p=0.9)
    freq = torch.bincount(tokens[0].reshape(-1), minlength=var.V).double() / n
    assert freq[exact == 0].sum() == 0, "a filtered-out token was drawn"
    assert 0.5 * (freq - exact).abs().sum() < 0.05


def test_images_independent_of_batch_composition(pair):
    _, fast = pair
    whole, tok_whole = fast.sample([1, 2, 3, 4], seed=5, top_k=20, return_tokens=True)
    part, tok_part = fast.sample([3, 4], seed=5, top_k=20, image_offset=2, return_tokens=True)
    for a, b in zip(tok_whole, tok_part):
        assert torch.equal(a[2:], b)
    torch.testing.assert_close(whole[2:], part, rtol=0, atol=1e-5)


def test_seeds(pair):
    _, fast = pair
    a = fast.sample([1, 2], seed=1, top_k=20)
    assert torch.equal(a, fast.sample([1, 2], seed=1, top_k=20))
    assert not torch.equal(a, fast.sample([1, 2], seed=2, top_k=20))


def test_scale_seeds_distinct():
    seeds = {scale_seed(s, si) for s in range(50) for si in range(10)}
    assert len(seeds) == 500 and all(0 <= s < 2**63 for s in seeds)


def test_fast_encode_matches_reference(pair):
    ref, fast = pair
    torch.manual_seed(1)
    x = torch.rand(3, 3, 64, 64)
    for a, b in zip(ref.encode(x), fast.encode(x)):
        assert torch.equal(a, b)


def test_more_smooth_runs_and_is_seeded(pair):
    _, fast = pair
    a = fast.sample([1, 2], seed=3, top_k=10, more_smooth=True)
    assert a.shape == (2, 3, 64, 64) and torch.equal(a, fast.sample([1, 2], seed=3, top_k=10, more_smooth=True))


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_reduced_precision_mostly_agrees(pair, dtype, tmp_path):
    """bfloat16 greedy tokens agree with float32 on most positions (the rest are near-ties)."""
    ref, _ = pair
    var, vae = ref.var, ref.vae
    low = var_fast.Sampler(var, vae, device=torch.device("cpu"), dtype=dtype, backend="fast")
    _, tok_r = ref.sample(list(range(10)), top_k=1, seed=0, return_tokens=True)
    _, tok_l = low.sample(list(range(10)), top_k=1, seed=0, return_tokens=True)
    agree = torch.cat([(a == b).reshape(-1) for a, b in zip(tok_r, tok_l)]).float().mean()
    assert agree >= 0.9


def test_large_batches_split_without_changing_images(pair):
    _, fast = pair
    whole, tok_whole = fast.sample([1, 2, 3, 4, 5], seed=9, top_k=20, return_tokens=True)
    fast.max_batch_size = 2
    try:
        split, tok_split = fast.sample([1, 2, 3, 4, 5], seed=9, top_k=20, return_tokens=True)
    finally:
        fast.max_batch_size = None
    assert all(torch.equal(a, b) for a, b in zip(tok_whole, tok_split))
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graphs_match_eager(dtype):
    """Replayed CUDA graphs give the eager pass's tokens, on the first call (capture) and later ones."""
    var, vae = make_models("d3_shared")
    var, vae = var.cuda(), vae.cuda()
    graphed = FastSampler(var, vae, dtype=dtype, cuda_graphs=True)
    eager = FastSampler(var, vae, dtype=dtype, cuda_graphs=False)
    for labels, seed in (([1, 2, 3], 0), ([4, 5, 6], 1), ([7, 7, 0], 2)):
        label_B = torch.tensor(labels, device="cuda")
        _, tok_g = graphed.sample(label_B, seed=seed, top_k=1)
        _, tok_e = eager.sample(label_B, seed=seed, top_k=1)
        assert all(torch.equal(a, b) for a, b in zip(tok_g, tok_e))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cuda_graphs", [True, False], ids=["graphs", "eager"])
@pytest.mark.parametrize("name", ["d2", "d3_shared"])
def test_cuda_greedy_tokens_match_reference(name, cuda_graphs):
    """On the GPU, float32: the fast sampler (graphed or eager) draws the reference backend's greedy tokens."""
    var, vae = make_models(name)
    var, vae = var.cuda(), vae.cuda()
    ref = var_fast.Sampler(var, vae, device=torch.device("cuda"), dtype=torch.float32, backend="reference")
    fast = FastSampler(var, vae, cuda_graphs=cuda_graphs)
    labels = torch.tensor([0, 3, 3, 9, 5], device="cuda")
    _, tok_r = ref.sample(labels, cfg=1.5, top_k=1, seed=0, return_tokens=True)
    for seed in (0, 1):  # the second call replays the captured graphs
        _, tok_f = fast.sample(labels, seed=seed, cfg=1.5, top_k=1)
        for si, (a, b) in enumerate(zip(tok_r, tok_f)):
            assert torch.equal(a, b), f"scale {si}: greedy tokens differ (cuda_graphs={cuda_graphs})"


@pytest.mark.emu
@pytest.mark.parametrize("name", ["d2", "d3_shared"])
def test_emulated_greedy_tokens_match_reference(emulated, name):
    """The fast sampler on the emulated CUDA kernels (CPU tensors, CUDA graphs off) draws the reference
    backend's greedy tokens."""
    var, vae = make_models(name)
    ref = var_fast.Sampler(var, vae, device=torch.device("cpu"), backend="reference")
    labels = torch.tensor([0, 3, 9])
    _, tok_r = ref.sample(labels, cfg=1.5, top_k=1, seed=0, return_tokens=True)
    _, tok_f = FastSampler(var, vae, cuda_graphs=False).sample(labels, seed=4, cfg=1.5, top_k=1)
    for si, (a, b) in enumerate(zip(tok_r, tok_f)):
        assert torch.equal(a, b), f"scale {si}: greedy tokens differ"


def test_bad_logits_raise_after_the_last_scale(device):
    """NaN logits are reported once, after the loop (one read of the device status word), with the
    sampling op's own message; no scale waits for the device."""
    var, vae = make_models("d2")
    var, vae = var.to(device), vae.to(device)
    with torch.no_grad():
        var.head.bias.fill_(float("nan"))
    calls = []
    sampler = FastSampler(var, vae, cuda_graphs=False)
    with pytest.raises(RuntimeError, match="sample_cfg_top_k_top_p: logits contain NaN"):
        sampler.sample(torch.tensor([1, 2], device=device), seed=0, cfg=1.5, top_k=5,
                       on_scale=lambda si, S: calls.append(si))
    assert calls == list(range(len(var.patch_nums)))  # every scale ran before the error was read
