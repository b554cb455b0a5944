"""The Infinity golden data (scripts/make_infinity_golden.py) is whole and self-consistent, so it cannot rot
silently: every case holds what it promises with consistent shapes, the summed codes are the bits' codes summed
as upstream sums them, the images match their digests, the B=1 runs of a seed group are that batch's images,
the weights have upstream's key layout for their config, and the tiny T5 loads and gives the stored features.
Parity of var_fast's port with these cases is tested in tests/test_infinity_reference.py."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import infinity_golden as ig

CASES = ig.cases()
CASE_IDS = [c["name"] for c in CASES]
CASE_KEYS = {"name", "model", "covers", "prompts", "negative_prompt", "B", "h_div_w", "h_div_w_template", "pn",
             "scale_schedule", "cfg_list", "tau_list", "top_k", "top_p", "cfg_insertion_layer", "sampling_per_bits",
             "g_seed", "seed_group", "image_index", "cond", "negative", "bits", "summed_codes", "image_shape",
             "image_sha256", "image_bgr"}
VAE_STRIDE = 16  # pixels per token of upstream's dynamic-resolution templates


def test_source_and_models():
    golden, weights = ig.load_golden(), ig.load_weights()
    for data in (golden, weights):
        assert data["source"]["repo"] == "FoundationVision/Infinity"
        assert data["source"]["commit"].startswith("4c27bbb")
    assert ig.model_names() == ["tiny", "tiny_patchify"]
    assert {c["model"] for c in CASES} == set(ig.model_names())
    assert [ig.model_config(m)["apply_spatial_patchify"] for m in ig.model_names()] == [0, 1]


@pytest.mark.parametrize("name", ig.model_names())
def test_weights_have_upstreams_layout(name):
    cfg = ig.model_config(name)
    tf, vae = ig.transformer_state_dict(name), ig.vae_state_dict(name)
    stored = ig.load_weights()["models"][name]
    # stored in bfloat16: every float value is exact in bf16, the float32 copies are those values
    for sd, raw in ((tf, stored["transformer"]), (vae, stored["vae"])):
        assert sd.keys() == raw.keys()
        for k, v in raw.items():
            assert v.dtype in (torch.bfloat16, torch.int64), k
            assert torch.equal(sd[k].to(v.dtype), v) and (not v.is_floating_point() or sd[k].dtype == torch.float32)
    C, d = cfg["embed_dim"], cfg["codebook_dim"]
    d_vae = 4 * d if cfg["apply_spatial_patchify"] else d
    per_chunk = cfg["depth"] // cfg["block_chunks"]
    blocks = {k.split(".sa.")[0] for k in tf if ".sa.mat_qkv.weight" in k}
    assert blocks == {f"block_chunks.{i}.module.{j}" for i in range(cfg["block_chunks"]) for j in range(per_chunk)}
    assert tf["word_embed.weight"].shape == (C, d_vae)
    assert tf["head.weight"].shape == (2 * d_vae, C)
    assert tf["cfg_uncond"].shape == (cfg["text_maxlen"], cfg["text_channels"])
    pool_heads = cfg["text_channels"] // 128  # upstream TextAttentivePool: head_dim 128 of the text width
    assert tf["text_proj_for_sos.ca.mat_q"].shape == (1, pool_heads, C // pool_heads)
    assert tf["block_chunks.0.module.0.sa.scale_mul_1H11"].shape == (1, cfg["num_heads"], 1, 1)
    assert torch.equal(vae["quantizer.lfq.mask"], 2 ** torch.arange(d - 1, -1, -1))
    assert vae["decoder.conv_in.conv.weight"].shape[1] == d and vae["encoder.conv_out.conv.weight"].shape[0] == d
    assert len(cfg["vae_ch_mult"]) == int(math.log2(cfg["vae_patch_size"])) + 1
    # the weights are not trivial: some self-attention temperature is above upstream's clamp (log 100)
    temps = torch.cat([v.flatten() for k, v in tf.items() if k.endswith("scale_mul_1H11")])
    assert (temps > math.log(100)).any() and (temps < math.log(100)).any()


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_case_is_whole_and_consistent(c):
    assert set(c) == CASE_KEYS
    cfg = ig.model_config(c["model"])
    patch = 2 if cfg["apply_spatial_patchify"] else 1
    d, S, B = cfg["codebook_dim"], len(c["scale_schedule"]), c["B"]
    assert B == len(c["prompts"]) >= 1 and c["pn"] == cfg["pn"]
    assert abs(c["h_div_w_template"] - c["h_div_w"]) < 0.02
    assert len(c["cfg_list"]) == len(c["tau_list"]) == S
    (layer,) = c["cfg_insertion_layer"]
    assert layer == 0 or -cfg["depth"] < layer < 0
    # the text conditions are upstream encode_prompt tuples, one sequence per image
    for record in (c["cond"], c["negative"]):
        if record is None:
            continue
        kv, lens, cu, ltext = ig.text_tuple(record)
        assert len(lens) == B and min(lens) >= 1 and ltext == max(lens)
        assert kv.dtype == torch.float32 and kv.shape == (sum(lens), cfg["text_channels"])
        assert cu.dtype == torch.int32 and cu.tolist() == [0] + torch.tensor(lens).cumsum(0).tolist()
    assert (c["negative"] is None) == (c["negative_prompt"] is None)
    # schedule: upstream's template, t = 1, the last scale gives the image size
    sched = ig.schedule(c)
    assert sched[0] == (1, 1, 1) and all(t == 1 for t, _, _ in sched)
    assert all(h1 <= h2 and w1 <= w2 for (_, h1, w1), (_, h2, w2) in zip(sched, sched[1:]))
    _, h, w = sched[-1]
    assert abs(h / w - c["h_div_w_template"]) < 0.02
    assert c["image_shape"] == [B, VAE_STRIDE * h, VAE_STRIDE * w, 3]
    # bits per scale on the VAE grid, 0/1
    assert len(c["bits"]) == S
    for (_, hs, ws), bits in zip(sched, c["bits"]):
        assert bits.dtype == torch.uint8 and bits.shape == (B, 1, patch * hs, patch * ws, d)
        assert bits.max() <= 1
    assert c["summed_codes"].shape == (B, d, patch * h, patch * w) and c["summed_codes"].dtype == torch.float32
    assert len(c["image_sha256"]) == B
    if c["image_bgr"] is not None:
        assert c["image_bgr"].dtype == torch.uint8 and list(c["image_bgr"].shape) == c["image_shape"]
        assert ig.image_digests(c["image_bgr"], rgb=False) == c["image_sha256"]
        assert ig.image_digests(ig.images_rgb(c)) == c["image_sha256"]


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_summed_codes_are_the_bits_summed(c):
    """upstream: codes = l2norm(bits * 2s - s), s = 1/sqrt(d); every scale but the last trilinearly upsampled
    to the last scale's grid, all summed; that sum is what vae.decode got."""
    assert torch.equal(_codes_sum(c["bits"], tuple(c["bits"][-1].shape[1:4])), c["summed_codes"])


def test_the_cases_cover_the_issue():
    """Two model shapes (one patchify), two+ aspect ratios, greedy and seeded, with and without a negative
    prompt, CFG on the logits and at a layer, no guidance, batches, seed groups for image_seeds."""
    assert len(ig.aspect_ratios()) >= 2
    for model in ig.model_names():
        mine = ig.cases(model)
        assert any(c["top_k"] == 1 for c in mine) and any(c["top_k"] != 1 for c in mine)
        assert any(c["negative"] is not None for c in mine) and any(c["negative"] is None for c in mine)
        assert any(c["cfg_insertion_layer"] == [0] for c in mine)
        assert any(c["cfg_insertion_layer"][0] < 0 for c in mine)
        assert any(c["B"] > 1 for c in mine) and any(c["image_bgr"] is not None for c in mine)
        assert len({c["h_div_w_template"] for c in mine}) >= 2
    assert any(all(v == 1 for v in c["cfg_list"]) for c in CASES)
    assert any(len(set(c["cfg_list"])) > 1 and len(set(c["tau_list"])) > 1 for c in CASES)
    assert any(c["sampling_per_bits"] != 1 for c in CASES)
    # greedy bits are not one constant per bit over the image (the models carry position information)
    for c in CASES:
        if c["top_k"] == 1:
            per_bit = c["bits"][-1].float().flatten(0, 3).mean(0)
            assert ((per_bit > 0) & (per_bit < 1)).any(), c["name"]
    # settings change the outputs: no two cases of different settings share their images
    digests = {}
    for c in CASES:
        digests.setdefault(tuple(c["image_sha256"]), []).append(c["name"])
    shared = [names for names in digests.values() if len(names) > 1]
    assert shared == [["tiny_run_infinity_square_negative", "tiny_sampling_per_bits_8"]]


def test_sampling_per_bits_is_ignored_by_upstream():
    """upstream's autoregressive_infer_cfg takes sampling_per_bits and never uses it: same outputs."""
    a, b = ig.case("tiny_run_infinity_square_negative"), ig.case("tiny_sampling_per_bits_8")
    assert a["sampling_per_bits"] == 1 and b["sampling_per_bits"] == 8
    assert {k for k in a if not _same(a[k], b[k])} == {"name", "covers", "sampling_per_bits"}


def _same(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return torch.equal(x, y)
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    return x == y


@pytest.mark.parametrize("group", sorted(ig.seed_groups()))
def test_seed_group_runs_are_the_batch_images(group):
    """Each B=1 run of a seed group is image i of the batch case: same prompt, text features, negative and
    settings, its own g_seed; the seeds differ from each other and from the batch's."""
    batch, runs = ig.case(group), ig.seed_groups()[group]
    assert [r["image_index"] for r in runs] == list(range(batch["B"])) and batch["B"] > 1
    assert len({r["g_seed"] for r in runs} | {batch["g_seed"]}) == batch["B"] + 1
    same = ("model", "negative_prompt", "h_div_w", "scale_schedule", "cfg_list", "tau_list", "top_k", "top_p",
            "cfg_insertion_layer", "sampling_per_bits")
    kv, lens, _, _ = ig.text_tuple(batch["cond"])
    starts = [0] + torch.tensor(lens).cumsum(0).tolist()
    for i, r in enumerate(runs):
        assert r["B"] == 1 and r["prompts"] == [batch["prompts"][i]] and r["seed_group"] == group
        assert all(_same(r[k], batch[k]) for k in same)
        assert torch.equal(r["cond"]["kv_compact"], kv[starts[i]:starts[i + 1]])
        if batch["negative"] is not None:
            nkv, nlens, _, _ = ig.text_tuple(batch["negative"])
            assert torch.equal(r["negative"]["kv_compact"], nkv[:nlens[0]])


def _codes_sum(bits_per_scale, last):
    """upstream's sum: codes = l2norm(bits * 2s - s), s = 1/sqrt(d), every scale but the last trilinearly
    upsampled to the last scale's (t, h, w) grid."""
    d = bits_per_scale[0].shape[-1]
    s = 1 / math.sqrt(d)
    total = 0
    for si, bits in enumerate(bits_per_scale):
        codes = F.normalize(bits.long() * s * 2 - s, dim=-1).permute(0, 4, 1, 2, 3)  # B d 1 h w
        total = total + (codes if si == len(bits_per_scale) - 1 else F.interpolate(codes, size=last, mode="trilinear"))
    return total.squeeze(2)


@pytest.mark.parametrize("record", ig.vae_encode_records(), ids=lambda r: r["model"])
def test_vae_encode_records(record):
    """upstream's vae.encode of a stored image: shapes on the VAE grid, one record per model, and z is the
    bits' codes summed (upstream's quantizer adds z + (zhat - z) and interpolates each scale, so z equals the
    sampler-style sum only to the last float bit)."""
    cfg = ig.model_config(record["model"])
    d, src = cfg["codebook_dim"], ig.case(record["input_case"])
    assert src["model"] == record["model"] and src["image_bgr"] is not None
    patch = 2 if cfg["apply_spatial_patchify"] else 1
    assert record["scale_schedule"] == [[t, patch * h, patch * w] for t, h, w in src["scale_schedule"]]
    _, H, W = record["scale_schedule"][-1]
    image = ig.vae_input(record)
    assert image.shape == (1, 3, H * cfg["vae_patch_size"], W * cfg["vae_patch_size"])
    assert image.min() >= -1 and image.max() <= 1
    assert record["recon_shape"] == [image.shape[2], image.shape[3], 3]
    assert record["h"].shape == record["z"].shape == (1, d, H, W)
    assert len(record["bits"]) == len(record["var_input"]) + 1 == len(record["scale_schedule"])
    for (_, h, w), bits in zip(record["scale_schedule"], record["bits"]):
        assert bits.dtype == torch.uint8 and bits.shape == (1, 1, h, w, d) and bits.max() <= 1
    for (t, h, w), v in zip(record["scale_schedule"][1:], record["var_input"]):
        assert v.shape == (1, d, t, h, w)
    torch.testing.assert_close(_codes_sum(record["bits"], (1, H, W)), record["z"], rtol=0, atol=1e-6)
    # bits of the first scale: the sign of the area-averaged encoder output (no projection: d = codebook dim)
    first = F.interpolate(record["h"].unsqueeze(2), size=tuple(record["scale_schedule"][0]), mode="area")
    assert torch.equal(record["bits"][0], (first.permute(0, 2, 3, 4, 1) > 0).to(torch.uint8))
    assert {r["model"] for r in ig.vae_encode_records()} == set(ig.model_names())


@pytest.mark.slow  # a dozen encodes padded to 512 tokens: a few seconds on 2 cores
def test_tiny_t5_loads_and_gives_the_stored_features():
    """The tiny T5 in Hugging Face layout loads with T5TokenizerFast / T5EncoderModel and reproduces the stored
    encode_prompt features (and the features each case was run with)."""
    transformers = pytest.importorskip("transformers")
    from benchmarks.infinity_upstream import encode_prompt

    tokenizer = transformers.T5TokenizerFast.from_pretrained(ig.T5_DIR)
    encoder = transformers.T5EncoderModel.from_pretrained(ig.T5_DIR).eval()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert encoder.config.d_model == ig.model_config("tiny")["text_channels"]
    records = list(ig.t5_features()) + [dict(prompts=c["prompts"], **c["cond"]) for c in CASES]
    records += [dict(prompts=[c["negative_prompt"]] * c["B"], **c["negative"]) for c in CASES if c["negative"]]
    assert any(r["prompts"] == [""] for r in records)
    distinct = {}
    for r in records:  # the same prompts were stored with the same features
        first = distinct.setdefault(tuple(r["prompts"]), r)
        assert torch.equal(first["kv_compact"], r["kv_compact"]) and first["lens"] == r["lens"]
    for r in distinct.values():
        kv, lens, cu, ltext = encode_prompt(tokenizer, encoder, r["prompts"])
        assert lens == r["lens"] and ltext == r["Ltext"] and torch.equal(cu, r["cu_seqlens_k"])
        # float32 GEMMs may round differently on another CPU; on the machine that made the file they are equal
        torch.testing.assert_close(kv, r["kv_compact"], rtol=1e-5, atol=1e-5)


def test_image_bytes_allow_float_rounding_only():
    """Within rounding: 1 level, on at most MAX_ROUNDED_SHARE of the values; 2 levels or more values fail."""
    image = torch.randint(1, 254, (2, 64, 64, 3), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    ig.assert_close_bytes(image, image.clone())
    rounded = image.clone()
    rounded.view(-1)[:int(image.numel() * ig.MAX_ROUNDED_SHARE)] += 1
    ig.assert_close_bytes(rounded, image)
    two_levels = image.clone()
    two_levels.view(-1)[0] += 2
    with pytest.raises(AssertionError, match="by up to 2 levels"):
        ig.assert_close_bytes(two_levels, image)
    many = image.clone()
    many.view(-1)[:int(image.numel() * ig.MAX_ROUNDED_SHARE * 2)] += 1
    with pytest.raises(AssertionError, match="differ"):
        ig.assert_close_bytes(many, image)


def test_stored_images_decode_from_their_summed_codes():
    """The stored images are the decoder's output of the stored summed codes, within rounding here (and exactly
    where decoder_rounds_like_golden() holds): what lets the digest-only cases lean on the bits and codes."""
    for c in ig.cases():
        if c["image_bgr"] is not None:
            ours = ig.decoded_stored_images(c)
            if ig.decoder_rounds_like_golden():
                assert torch.equal(ours, ig.images_rgb(c))
            ig.assert_close_bytes(ours, ig.images_rgb(c), c["name"])
