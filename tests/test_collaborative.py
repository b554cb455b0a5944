"""Collaborative decoding (CoDe): a drafter and a refiner sharing one VQVAE.

tests/data/golden_code.pt holds what czg1225/CoDe's ``autoregressive_infer_cfg_draft`` +
``autoregressive_infer_cfg_refine`` sampled (float32, CPU) on tests/model_factory.py's deterministic
drafter/refiner pairs (scripts/make_code_golden.py says how it was made); the weights go through real
checkpoint files and ``var_fast.load(..., refiner=...)``.
"""
import os

import pytest
import torch

import var_fast
from model_factory import CODE_PAIRS, make_models, save_pair
from var_fast.checkpoint import CheckpointError

GOLDEN = torch.load(os.path.join(os.path.dirname(__file__), "data", "golden_code.pt"), weights_only=True)


def pair_files(drafter: str, refiner: str, folder: str):
    d_var, vae = make_models(drafter, seed=0)
    r_var, _ = make_models(refiner, seed=7)
    var_path, vae_path = save_pair(d_var, vae, folder)
    refiner_path = os.path.join(folder, "refiner.pth")
    torch.save(r_var.state_dict(), refiner_path)
    return var_path, vae_path, refiner_path


@pytest.fixture(scope="module", params=[f"{d}+{r}" for d, r in CODE_PAIRS])
def pair(request, tmp_path_factory):
    drafter, refiner = request.param.split("+")
    return request.param, pair_files(drafter, refiner, str(tmp_path_factory.mktemp(request.param)))


def _run(sampler, case, **extra):
    labels = None if case["label"] is None else torch.tensor(case["label"])
    return sampler.sample(labels, batch_size=case["B"] if labels is None else None, cfg=case["cfg"],
                          top_k=list(case["top_k"]), top_p=case["top_p"], temperature=list(case["temp"]),
                          seed=case["seed"], more_smooth=case["more_smooth"], draft_steps=case["N"],
                          return_tokens=True, **extra)


@pytest.mark.parametrize("case_index", range(10))
def test_reference_matches_code_seed_for_seed(pair, case_index):
    name, files = pair
    sampler = var_fast.load(files[0], files[1], refiner=files[2], device="cpu", backend="reference")
    case = GOLDEN[name]["cases"][case_index]
    images, tokens = _run(sampler, case)
    assert len(tokens) == len(case["tokens"])
    for si, (got, want) in enumerate(zip(tokens, case["tokens"])):
        assert torch.equal(got, want), f"N={case['N']} scale {si}: tokens differ from CoDe's code"
    torch.testing.assert_close(images[:1], case["image"].float(), rtol=0, atol=2e-3)  # golden stored in float16


def test_golden_data_is_discriminating():
    """The cases exercise real sampling: the refiner's scales differ from the drafter's alone, N matters."""
    cases = GOLDEN["d2+r1"]["cases"]
    seeded_n1, seeded_n3 = cases[1], cases[6]
    assert seeded_n1["tokens"][-1].unique().numel() > 10
    assert not torch.equal(seeded_n1["tokens"][-1], seeded_n3["tokens"][-1])


def test_pair_differs_from_drafter_alone(pair):
    """The late scales come from the refiner: with the same seed the tokens differ from the drafter's."""
    name, files = pair
    alone = var_fast.load(files[0], files[1], device="cpu", backend="reference")
    both = var_fast.load(files[0], files[1], refiner=files[2], device="cpu", backend="reference")
    _, t_alone = alone.sample([1, 2], top_k=1, return_tokens=True, seed=0)
    _, t_pair = both.sample([1, 2], top_k=1, return_tokens=True, seed=0, draft_steps=1)
    assert torch.equal(t_alone[0], t_pair[0])  # scale 0 drafted
    assert not all(torch.equal(a, b) for a, b in zip(t_alone[1:], t_pair[1:]))


@pytest.mark.parametrize("draft_steps", [1, 3])
def test_fast_greedy_tokens_match_reference(pair, device, draft_steps):
    name, files = pair
    ref = var_fast.load(files[0], files[1], refiner=files[2], device="cpu", backend="reference")
    fast = var_fast.load(files[0], files[1], refiner=files[2], device=device, backend="fast")
    labels = [0, 3, 7, 9, 10]
    for temperature in (1.0, [1.1, 1.1, 1.0, 1.0]):
        _, tok_r = ref.sample(labels, cfg=1.5, top_k=1, seed=0, draft_steps=draft_steps, temperature=temperature,
                              return_tokens=True)
        _, tok_f = fast.sample(labels, cfg=1.5, top_k=1, seed=5, draft_steps=draft_steps, temperature=temperature,
                               return_tokens=True)
        for si, (a, b) in enumerate(zip(tok_r, tok_f)):
            assert torch.equal(a, b.cpu()), f"N={draft_steps} scale {si}: greedy tokens differ"


def test_fast_pair_images_independent_of_batch(pair):
    name, files = pair
    fast = var_fast.load(files[0], files[1], refiner=files[2], device="cpu", backend="fast")
    kw = dict(top_k=[5, 10, 20, 30], top_p=0.9, temperature=[1.1, 1.1, 1.0, 1.0], seed=3, draft_steps=2)
    both, tok_both = fast.sample([1, 2, 3], return_tokens=True, **kw)
    part, tok_part = fast.sample([2, 3], image_offset=1, return_tokens=True, **kw)
    for a, b in zip(tok_both, tok_part):
        assert torch.equal(a[1:], b)
    torch.testing.assert_close(both[1:], part, rtol=0, atol=1e-5)


def test_fine_tuned_pair_default_draft_steps(pair):
    name, files = pair
    sampler = var_fast.load(files[0], files[1], refiner=files[2], device="cpu", backend="reference", draft_steps=2)
    assert sampler.draft_steps == 2
    a = sampler.sample([1], top_k=1, seed=0)
    assert torch.equal(a, sampler.sample([1], top_k=1, seed=0, draft_steps=2))


def test_draft_steps_checks(pair):
    name, files = pair
    sampler = var_fast.load(files[0], files[1], refiner=files[2], device="cpu", backend="reference")
    with pytest.raises(ValueError, match="draft_steps is required"):
        sampler.sample([1])
    for bad in (0, 4, -1, 1.5, True):
        with pytest.raises(ValueError, match="draft_steps must be an integer in 1..3"):
            sampler.sample([1], draft_steps=bad)
    single = var_fast.load(files[0], files[1], device="cpu", backend="reference")
    with pytest.raises(ValueError, match="draft_steps applies to a drafter/refiner pair"):
        single.sample([1], draft_steps=2)
    with pytest.raises(ValueError, match="draft_steps applies to a drafter/refiner pair"):
        var_fast.load(files[0], files[1], device="cpu", draft_steps=2)
    with pytest.raises(ValueError, match="draft_steps must be"):
        var_fast.load(*files[:2], refiner=files[2], device="cpu", draft_steps=9)


@pytest.mark.parametrize("field, value, what", [
    ("vocab_size", 32, "vocabulary size"), ("num_classes", 5, "class count"),
    ("patch_nums", (1, 2, 3), "patch layout"), ("Cvae", 4, "Cvae"),
])
def test_mismatched_refiner_is_refused(tmp_path, field, value, what):
    from model_factory import REFINER_CONFIGS, fill_deterministic
    from var_fast.models import VAR, VARConfig
    var_path, vae_path, _ = pair_files("d2", "r1", str(tmp_path))
    kw = dict(REFINER_CONFIGS["r1"][0])
    kw[field] = value
    bad = VAR(VARConfig(**kw))
    fill_deterministic(bad, 3)
    bad_path = str(tmp_path / "bad_refiner.pth")
    torch.save(bad.state_dict(), bad_path)
    with pytest.raises(CheckpointError, match=f"cannot work with drafter.*{what}"):
        var_fast.load(var_path, vae_path, refiner=bad_path, device="cpu")


def test_missing_refiner_file(tmp_path):
    var_path, vae_path, _ = pair_files("d2", "r1", str(tmp_path))
    with pytest.raises(Exception, match="refiner checkpoint"):
        var_fast.load(var_path, vae_path, refiner=str(tmp_path / "nope.pth"), device="cpu")


@pytest.mark.parametrize("kwargs, message", [
    (dict(top_k=[1, 2]), "top_k must be one value or one per scale"),
    (dict(top_k=[1, 2, -3, 4]), "top_k at scale 2"),
    (dict(temperature=0), "temperature must be a finite number > 0"),
    (dict(temperature=[1.0, 1.0, float("nan"), 1.0]), "temperature at scale 2"),
    (dict(temperature="hot"), "temperature must be"),
])
def test_schedules_are_checked(pair, kwargs, message):
    name, files = pair
    for backend in ("reference", "fast"):
        sampler = var_fast.load(files[0], files[1], device="cpu", backend=backend)
        with pytest.raises(ValueError, match=message):
            sampler.sample([1], **kwargs)


def test_single_model_schedules_match_scalars(pair):
    """One value per scale equals the same scalar; a per-scale top_k changes only the scales it changes."""
    name, files = pair
    sampler = var_fast.load(files[0], files[1], device="cpu", backend="reference")
    _, a = sampler.sample([1, 2], top_k=5, temperature=3.0, seed=4, return_tokens=True)
    _, b = sampler.sample([1, 2], top_k=[5] * 4, temperature=[3.0] * 4, seed=4, return_tokens=True)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    _, c = sampler.sample([1, 2], top_k=5, temperature=1.0, seed=4, return_tokens=True)
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_pair_cost_d30_d16():
    """The cost report on the published shapes: the pair needs fewer FLOPs and less KV cache than d30."""
    from var_fast.collaborative import pair_cost
    from var_fast.models import VARConfig
    d30, d16 = VARConfig.for_depth(30), VARConfig.for_depth(16)
    for n in (6, 8):
        c = pair_cost(d30, d16, n)
        assert c["flops_pair"] < c["flops_drafter"] and c["kv_bytes_pair"] < c["kv_bytes_drafter"]
    assert pair_cost(d30, d16, 6)["flops_pair"] < pair_cost(d30, d16, 8)["flops_pair"]
