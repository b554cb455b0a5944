"""The Infinity reference sampler against upstream's own outputs (tests/data/golden_infinity.pt, made by
scripts/make_infinity_golden.py from FoundationVision/Infinity 4c27bbb's autoregressive_infer_cfg on small
random-weight models): the same bits at every scale, the same summed codes and the same uint8 image (on a CPU that rounds
differently from the one that made the golden: within 1 level, infinity_golden.assert_images_are_upstreams), in float32
on the CPU, with both random-stream modes; plus the sampler's input checks and its pieces."""
import hashlib
import os

import pytest
import torch

from var_fast.infinity import TextCondition, infer_reference, scale_schedule
from var_fast.infinity.loading import bsq_vae_from_state_dict, infinity_from_state_dict
from var_fast.infinity.reference_sampler import sample_bits
from infinity_factory import make_models, random_text
import infinity_golden as ig

DATA = os.path.join(os.path.dirname(__file__), "data")
GOLDEN = torch.load(os.path.join(DATA, "golden_infinity.pt"), weights_only=True)
CASES = {c["name"]: c for c in GOLDEN["cases"]}
SEED_GROUPS = sorted({c["seed_group"] for c in GOLDEN["cases"] if c["seed_group"]})


@pytest.fixture(scope="module")
def golden_models():
    weights = torch.load(os.path.join(DATA, "golden_infinity_weights.pt"), weights_only=True)["models"]
    out = {}
    for name, w in weights.items():
        cfg = w["config"]
        model = infinity_from_state_dict(w["transformer"], f"golden {name} transformer",
                                         rope2d_normalized_by_hw=cfg["rope2d_normalized_by_hw"],
                                         add_lvl_embeding_only_first_block=cfg["add_lvl_embeding_only_first_block"])
        vae = bsq_vae_from_state_dict(w["vae"], f"golden {name} VAE")
        assert (model.cfg.depth, model.cfg.embed_dim, model.cfg.num_heads, vae.cfg.codebook_dim) == \
            (cfg["depth"], cfg["embed_dim"], cfg["num_heads"], cfg["codebook_dim"])
        assert (model.cfg.d_vae == 4 * vae.cfg.codebook_dim) == bool(cfg["apply_spatial_patchify"])
        out[name] = (model, vae)
    return out


def _text(record):
    return None if record is None else TextCondition(record["kv_compact"], record["lens"])


def _run(models, case, **streams):
    model, vae = models[case["model"]]
    return infer_reference(model, vae, _text(case["cond"]), [tuple(s) for s in case["scale_schedule"]],
                           negative=_text(case["negative"]), cfg_list=case["cfg_list"], tau_list=case["tau_list"],
                           top_k=case["top_k"], top_p=case["top_p"], cfg_insertion_layer=case["cfg_insertion_layer"],
                           sampling_per_bits=case["sampling_per_bits"], **streams)


def _assert_matches(out, case, rows=None):
    """out (or its ``rows``) equals the golden case: bits, summed codes, image bytes (upstream's are BGR)."""
    rows = slice(None) if rows is None else rows
    assert len(out.bits) == len(case["bits"])
    for si, (mine, up) in enumerate(zip(out.bits, case["bits"])):
        assert mine[rows].shape == up.shape, f"scale {si}"
        assert torch.equal(mine[rows].to(torch.uint8), up), f"bits differ at scale {si}"
    assert torch.equal(out.summed_codes[rows], case["summed_codes"])
    images = out.images[rows]
    assert list(images.shape) == case["image_shape"]
    ig.assert_images_are_upstreams(images, case)


def test_golden_covers_the_issue():
    """At least two model shapes (one with patchify), two aspect ratios, greedy and seeded, with and without a
    negative prompt, CFG on the logits and at a layer, cfg 1 (no guidance), batches, both stream modes."""
    cases = GOLDEN["cases"]
    assert {c["model"] for c in cases} >= {"tiny", "tiny_patchify"}
    assert len({c["h_div_w_template"] for c in cases}) >= 2
    assert any(c["top_k"] == 1 for c in cases) and any(c["top_k"] != 1 for c in cases)
    assert any(c["negative"] is not None for c in cases) and any(c["negative"] is None for c in cases)
    assert any(c["cfg_insertion_layer"] == [0] for c in cases) and any(c["cfg_insertion_layer"][0] < 0 for c in cases)
    assert any(all(v == 1 for v in c["cfg_list"]) for c in cases) and any(c["B"] > 1 for c in cases)
    assert SEED_GROUPS and GOLDEN["source"]["commit"].startswith("4c27bbb")


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_case_seed(golden_models, name):
    """``seed`` = upstream's g_seed: one generator over the whole batch."""
    case = CASES[name]
    assert [tuple(s) for s in case["scale_schedule"]] == scale_schedule(case["h_div_w"], case["pn"])
    _assert_matches(_run(golden_models, case, seed=case["g_seed"]), case)


@pytest.mark.parametrize("group", SEED_GROUPS)
def test_golden_image_seeds(golden_models, group):
    """``image_seeds``: image i of the batch equals upstream's B=1 run of its prompt with g_seed=image_seeds[i]."""
    singles = sorted((c for c in GOLDEN["cases"] if c["seed_group"] == group), key=lambda c: c["image_index"])
    base = CASES[group]
    assert len(singles) == base["B"]
    out = _run(golden_models, base, image_seeds=[c["g_seed"] for c in singles])
    for i, single in enumerate(singles):
        _assert_matches(out, single, rows=slice(i, i + 1))


# ---- the sampler's pieces and input checks ----------------------------------------------------------------
def test_sample_bits_top_k_top_p():
    logits = torch.tensor([[[2.0, -1.0], [-3.0, 0.5], [0.0, 0.0]]])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert sample_bits(logits[:, :2].clone(), top_k=1, rng=g).tolist() == [[0, 1]]
        assert sample_bits(logits[:, :2].clone(), top_p=0.5, rng=g).tolist() == [[0, 1]]  # the top bit alone has p > 0.5
    x = logits.clone()
    sample_bits(x, top_k=1, rng=g)
    assert torch.isinf(x[0, 0, 1]) and x[0, 0, 0] == 2.0  # in place, as upstream


@pytest.fixture(scope="module")
def tiny():
    return make_models("2b")


SCHED = scale_schedule(1.0, "0.06M")[:4]


def test_seed_modes_and_determinism(tiny):
    model, vae = tiny
    cond = random_text([3, 5])
    a = infer_reference(model, vae, cond, SCHED, seed=4)
    b = infer_reference(model, vae, cond, SCHED, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.bits, b.bits)) and torch.equal(a.images, b.images)
    assert a.images.dtype == torch.uint8 and a.images.shape == (2, 24, 24, 3)  # last grid 6x6, 4 px per cell
    c = infer_reference(model, vae, cond, SCHED, image_seeds=[4, 9])
    one = infer_reference(model, vae, cond.select([1]), SCHED, seed=9)
    assert all(torch.equal(x[1:], y) for x, y in zip(c.bits, one.bits)) and torch.equal(c.images[1:], one.images)
    # batched per-image streams: the same prompt twice with the same image seed gives the same image twice
    twice = cond.select([0, 0])
    g = infer_reference(model, vae, twice, SCHED, image_seeds=[4, 4], per_image_passes=False)
    assert all(torch.equal(x[0], x[1]) for x in g.bits)
    h = infer_reference(model, vae, twice, SCHED, seed=4)   # one stream over the batch: different draws
    assert not all(torch.equal(x[0], x[1]) for x in h.bits)
    d = infer_reference(model, vae, cond, SCHED, seed=4, decode=False)
    assert d.images is None and torch.equal(d.summed_codes, a.summed_codes)
    # a single negative prompt is used for every image (as upstream given it once per image)
    neg = random_text([2], seed=5)
    e = infer_reference(model, vae, cond, SCHED, seed=4, negative=neg)
    f = infer_reference(model, vae, cond, SCHED, seed=4, negative=neg.cat(neg))
    assert all(torch.equal(x, y) for x, y in zip(e.bits, f.bits))
    assert not all(torch.equal(x, y) for x, y in zip(a.bits, e.bits))


@pytest.mark.parametrize("kwargs,match", [
    (dict(cfg_list=[3.0] * 3), "cfg_list has 3 entries but the scale schedule has 4"),
    (dict(tau_list=[1.0] * 5), "tau_list has 5 entries"),
    (dict(tau_list=0.0), "tau_list must be positive"),
    (dict(top_k=-1), "top_k"),
    (dict(top_p=1.5), "top_p"),
    (dict(sampling_per_bits=3), "sampling_per_bits"),
    (dict(seed=1, image_seeds=[1, 2]), "not both"),
    (dict(image_seeds=[1]), "image_seeds has 1 seeds for 2 prompts"),
    (dict(cfg_insertion_layer=1), "upstream never applies CFG on probabilities"),
    (dict(cfg_insertion_layer=[-4]), "cfg_insertion_layer -4"),
    (dict(schedule=[(1, 1, 1), (1, 3, 5)]), "not the start of any published template"),
    (dict(negative=random_text([2, 2, 2])), "negative has 3 prompts"),
    (dict(negative=random_text([2], channels=128)), "negative text features have 128 channels"),
    (dict(cond=random_text([3, 5], channels=128)), "the text features have 128 channels"),
    (dict(cond=random_text([600, 5])), "more than the 512 rows"),
])
def test_bad_input(tiny, kwargs, match):
    model, vae = tiny
    args = dict(cond=random_text([3, 5]), schedule=SCHED)
    args.update(kwargs)
    cond, schedule = args.pop("cond"), args.pop("schedule")
    with pytest.raises(ValueError, match=match):
        infer_reference(model, vae, cond, schedule, **args)


def test_bad_pairs():
    model, vae = make_models("2b")
    _, vae_patchify = make_models("8b")   # 4 bits: the 2b transformer reads 8 (neither 4 nor 16)
    with pytest.raises(ValueError, match="reads 8 bits per token"):
        infer_reference(model, vae_patchify, random_text([3]), SCHED)
    model8, _ = make_models("8b")         # 16 bits per token: 4 x a 4-bit VAE, not 8
    with pytest.raises(ValueError, match="reads 16 bits per token"):
        infer_reference(model8, vae, random_text([3]), SCHED)


def test_text_condition():
    feats = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    t = TextCondition.from_padded(feats, mask)
    assert t.lens == [3, 2] and t.batch_size == 2 and t.channels == 3 and t.max_len == 3
    assert torch.equal(t.features, torch.cat((feats[0, :3], feats[1, :2])))
    assert t.cu_seqlens.tolist() == [0, 3, 5] and t.cu_seqlens.dtype == torch.int32
    assert t.select([1]).lens == [2] and torch.equal(t.select([1]).features, feats[1, :2])
    assert t.cat(t.select([0])).lens == [3, 2, 3]
    kv, lens, cu, ltext = t.as_upstream()
    assert lens == [3, 2] and ltext == 3 and torch.equal(kv, t.features)
    with pytest.raises(ValueError, match="at least one token"):
        TextCondition(torch.zeros(0, 3), [0])
    with pytest.raises(ValueError, match="lens is empty"):
        TextCondition(torch.zeros(0, 3), [])
    with pytest.raises(ValueError, match="sum to 4"):
        TextCondition(torch.zeros(5, 3), [4])
    with pytest.raises(ValueError, match="cannot concatenate"):
        t.cat(TextCondition(torch.zeros(1, 4), [1]))


def _vae_encode_records():
    return torch.load(os.path.join(DATA, "golden_infinity.pt"), weights_only=True)["vae_encode"]


@pytest.mark.parametrize("record", _vae_encode_records(), ids=lambda r: r["model"])
def test_golden_vae_encode(golden_models, record):
    """BSQVAE.encode / decode against upstream's vae.encode of a stored image and run_infinity's
    joint_vi_vae_encode_decode: encoder output, bits per scale, summed codes and the reconstruction bytes."""
    _, vae = golden_models[record["model"]]
    image = ig.vae_input(record)
    sched = [tuple(s) for s in record["scale_schedule"]]
    with torch.no_grad():
        # float: equal up to another CPU's rounding (the bits below, from it, are exact)
        torch.testing.assert_close(vae.encoder(image), record["h"], rtol=1e-5, atol=1e-5)
        z, bits = vae.encode(image, sched)
        recon = vae.decode(z)[0]
    assert len(bits) == len(record["bits"])
    assert all(torch.equal(mine.to(torch.uint8), up) for mine, up in zip(bits, record["bits"]))
    torch.testing.assert_close(z, record["z"], rtol=1e-5, atol=1e-5)  # float sums of upsampled codes
    rgb = ((recon + 1) / 2).permute(1, 2, 0).mul_(255).to(torch.uint8)
    assert list(rgb.shape) == record["recon_shape"]
    if hashlib.sha256(rgb.contiguous().numpy().tobytes()).hexdigest() != record["recon_sha256"]:
        assert not ig.decoder_rounds_like_golden(), "the reconstruction's bytes differ from upstream's"
