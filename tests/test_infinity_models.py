"""Infinity port: upstream's exact state-dict layouts, configuration read off the weights, checkpoint formats
(pth, safetensors, shards) and the errors for wrong files."""
import json
import os

import pytest
import torch

from var_fast.checkpoint import CheckpointError
from var_fast.infinity import (BSQVAE, Infinity, bsq_vae_config_from_state_dict, infinity_config_from_state_dict,
                               load_bsq_vae, load_infinity_files, load_infinity_transformer)
from var_fast.infinity.config import check_pair
from var_fast.infinity.loading import shard_files
from var_fast.infinity.transformer import default_cfg_uncond
from infinity_factory import CONFIGS, make_models, save_shards, save_state_dict

DATA = os.path.join(os.path.dirname(__file__), "data")
with open(os.path.join(DATA, "infinity_state_dicts.json")) as f:
    # keys, shapes and dtypes of upstream's modules at the published sizes, built on the meta device from
    # FoundationVision/Infinity 4c27bbb as tools/run_infinity.py builds them (infinity_2b + vae_type 32;
    # infinity_8b + vae_type 14 with apply_spatial_patchify=1, as tools/interactive_infer_8b.ipynb)
    UPSTREAM = json.load(f)
PUBLISHED = [("infinity_2b", "vae_d32", False), ("infinity_8b", "vae_d14_patchify", True)]


def _layout(module):
    return {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in module.state_dict().items()}


def _meta(layout):
    return {k: torch.empty(s, dtype=getattr(torch, d), device="meta") for k, (s, d) in layout.items()}


@pytest.mark.parametrize("transformer,vae,patchify", PUBLISHED)
def test_published_layouts_are_upstreams(transformer, vae, patchify):
    cfg = infinity_config_from_state_dict(_meta(UPSTREAM[transformer]), transformer)
    vae_cfg = bsq_vae_config_from_state_dict(_meta(UPSTREAM[vae]), vae)
    assert check_pair(cfg, vae_cfg) is patchify
    with torch.device("meta"):
        assert _layout(Infinity(cfg)) == UPSTREAM[transformer]
        assert _layout(BSQVAE(vae_cfg)) == UPSTREAM[vae]


def test_published_configs_read_off():
    c2 = infinity_config_from_state_dict(_meta(UPSTREAM["infinity_2b"]))
    assert (c2.depth, c2.embed_dim, c2.num_heads, c2.mlp_hidden, c2.text_channels, c2.d_vae, c2.block_chunks) == \
        (32, 2048, 16, 8192, 2048, 32, 8)
    assert c2.shared_aln and not (c2.swiglu or c2.rms_norm or c2.nm0 or c2.ca_gamma) and c2.pool_heads == 16
    c8 = infinity_config_from_state_dict(_meta(UPSTREAM["infinity_8b"]))
    assert (c8.depth, c8.embed_dim, c8.num_heads, c8.d_vae, c8.block_chunks) == (40, 3584, 28, 56, 8)
    v8 = bsq_vae_config_from_state_dict(_meta(UPSTREAM["vae_d14_patchify"]))
    assert (v8.codebook_dim, v8.downsample, v8.encoder_ch_mult) == (14, 8, (1, 2, 4, 4))
    assert bsq_vae_config_from_state_dict(_meta(UPSTREAM["vae_d32"])).downsample == 16


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_read_off_tiny(name):
    model, vae = make_models(name)
    assert infinity_config_from_state_dict(model.state_dict()) == model.cfg
    assert bsq_vae_config_from_state_dict(vae.state_dict()) == vae.cfg
    meta = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in model.state_dict().items()}
    assert infinity_config_from_state_dict(meta) == model.cfg
    assert check_pair(model.cfg, vae.cfg) is (name == "8b")


@pytest.fixture(scope="module")
def tiny():
    return make_models("2b")


def _equal_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_load_single_files(tmp_path, tiny, fmt):
    model, vae = tiny
    t = save_state_dict(model, str(tmp_path / f"t.{fmt}"))
    v = save_state_dict(vae, str(tmp_path / f"v.{fmt}"))
    m2, v2 = load_infinity_files(t, v)
    assert _equal_state(model, m2) and _equal_state(vae, v2)
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in m2.parameters())
    assert not m2.training and not v2.training


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_load_shards(tmp_path, tiny, fmt):
    model, _ = tiny
    folder = save_shards(model, str(tmp_path / "shards"), n=3, fmt=fmt)
    assert len(shard_files(folder)) == 3
    assert _equal_state(model, load_infinity_transformer(folder))
    assert _equal_state(model, load_infinity_transformer(shard_files(folder)))  # a list of shard files


def test_shard_errors(tmp_path, tiny):
    model, _ = tiny
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="without a shard index"):
        load_infinity_transformer(str(tmp_path / "empty"))
    folder = save_shards(model, str(tmp_path / "s"), n=2)
    os.remove(shard_files(folder)[1])
    with pytest.raises(CheckpointError, match="names files that are not in"):
        load_infinity_transformer(folder)
    a = save_state_dict(model, str(tmp_path / "a.pth"))
    with pytest.raises(CheckpointError, match="repeats"):
        load_infinity_transformer([a, a])
    with pytest.raises(CheckpointError, match="empty list"):
        load_infinity_transformer([])


def test_vae_wrapped_and_plain_conv_names(tmp_path, tiny):
    _, vae = tiny
    sd = vae.state_dict()
    torch.save({"vae": sd, "step": torch.tensor(3)}, tmp_path / "wrapped.pth")  # what upstream's vae_model reads
    assert _equal_state(vae, load_bsq_vae(tmp_path / "wrapped.pth"))
    # plain nn.Conv2d / nn.GroupNorm names (upstream's load_cnn maps them), buffers left out
    plain = {k.replace(".conv.weight", ".weight").replace(".conv.bias", ".bias")
             .replace(".norm.weight", ".weight").replace(".norm.bias", ".bias"): v
             for k, v in sd.items() if not k.endswith("lfq.mask")}
    assert "encoder.down.0.block.0.norm1.weight" in plain and "encoder.conv_in.weight" in plain
    torch.save(plain, tmp_path / "plain.pth")
    assert _equal_state(vae, load_bsq_vae(tmp_path / "plain.pth"))
    bad = dict(sd)
    bad["quantizer.lfq.mask"] = bad["quantizer.lfq.mask"].flip(0)
    torch.save(bad, tmp_path / "badmask.pth")
    with pytest.raises(CheckpointError, match="powers of two"):
        load_bsq_vae(tmp_path / "badmask.pth")


def test_transformer_adaptations(tmp_path, tiny):
    """What upstream's Infinity.load_state_dict tolerates: cfg_uncond of another length (padded with upstream's
    initial rows or cut), dropped training buffers; derived zero_k_bias buffers may be left out; bf16 weights."""
    model, _ = tiny
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("zero_k_bias")}
    sd["cfg_uncond"] = model.cfg_uncond.detach()[:100].clone()
    sd["attn_bias_for_masking"] = torch.zeros(1, 1, 4, 4)
    torch.save(sd, tmp_path / "short.pth")
    m = load_infinity_transformer(tmp_path / "short.pth")
    assert torch.equal(m.cfg_uncond[:100], model.cfg_uncond[:100])
    assert torch.equal(m.cfg_uncond[100:], default_cfg_uncond(512, model.cfg.text_channels)[100:])
    sd["cfg_uncond"] = torch.cat((model.cfg_uncond.detach(), torch.ones(8, model.cfg.text_channels)))
    torch.save(sd, tmp_path / "long.pth")
    assert torch.equal(load_infinity_transformer(tmp_path / "long.pth").cfg_uncond, model.cfg_uncond)
    torch.save({k: v.bfloat16() if v.is_floating_point() else v for k, v in model.state_dict().items()}, tmp_path / "bf16.pth")
    m = load_infinity_transformer(tmp_path / "bf16.pth")
    assert m.word_embed.weight.dtype == torch.float32
    assert torch.equal(m.word_embed.weight, model.word_embed.weight.bfloat16().float())


def test_default_cfg_uncond_is_upstreams_init():
    # upstream: trunc_normal_(std=1.2) from a CPU generator seeded 0, then / sqrt(Ct5)
    t = torch.empty(4, 8)
    torch.nn.init.trunc_normal_(t, std=1.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(default_cfg_uncond(4, 8), t / 8 ** 0.5)


def test_wrong_files(tmp_path, tiny):
    from model_factory import make_models as make_var
    model, vae = tiny
    t = save_state_dict(model, str(tmp_path / "t.pth"))
    v = save_state_dict(vae, str(tmp_path / "v.pth"))
    with pytest.raises(CheckpointError, match="swap the transformer and VAE"):
        load_infinity_files(v, t)
    with pytest.raises(CheckpointError, match="BSQ VAE checkpoint, but an Infinity transformer"):
        load_infinity_transformer(v)
    var, vqvae = make_var("d2")
    torch.save(var.state_dict(), tmp_path / "var.pth")
    torch.save(vqvae.state_dict(), tmp_path / "vqvae.pth")
    with pytest.raises(CheckpointError, match="VAR .*not an Infinity"):
        load_infinity_transformer(tmp_path / "var.pth")
    with pytest.raises(CheckpointError, match="VQVAE"):
        load_bsq_vae(tmp_path / "vqvae.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_infinity_transformer(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_infinity_files(tmp_path / "missing.pth", v)
    # a pair whose bits do not fit (8 vs 4: neither equal nor 4x)
    _, vae8 = make_models("8b")
    v8 = save_state_dict(vae8, str(tmp_path / "v8.pth"))
    sd = model.state_dict()
    with pytest.raises(CheckpointError, match="reads 8 bits per token, but VAE .* has 4 bits"):
        load_infinity_files(t, v8)
    # odd shapes the read-off names
    odd = dict(sd)
    odd["block_chunks.0.module.0.sa.scale_mul_1H11"] = torch.zeros(1, 1, 2, 1)
    with pytest.raises(CheckpointError, match="customized flash-attention layout"):
        infinity_config_from_state_dict(odd, "odd.pth")
    odd = dict(sd)
    odd["head.weight"] = torch.zeros(256, 128)
    with pytest.raises(CheckpointError, match="bit-label"):
        infinity_config_from_state_dict(odd, "odd.pth")
    odd = {k: v for k, v in sd.items() if not k.startswith("block_chunks.1.module.1.")}
    with pytest.raises(CheckpointError, match="uneven"):
        infinity_config_from_state_dict(odd, "odd.pth")
    odd = {k: v for k, v in sd.items() if k != "text_proj_for_sos.ca.mat_kv.weight"}
    with pytest.raises(CheckpointError, match="does not match the model read off its weights"):
        torch.save(odd, tmp_path / "odd.pth")
        load_infinity_transformer(tmp_path / "odd.pth")


@pytest.mark.parametrize("name", ["2b", "8b"])
def test_vae_encode_wiring(name):
    """encode: one bit map per scale of the VAE's schedule; the codes of those bits, brought to the full grid and
    summed, are the returned features (up to the straight-through form's rounding); decode gives an image.
    (Bit-exact equality with upstream's vae.encode: scripts/check_infinity_upstream.py.)"""
    from var_fast.infinity.schedules import scale_schedule, vae_schedule
    _, vae = make_models(name)
    sched = vae_schedule(scale_schedule(1.0, "0.06M")[:4], name == "8b")
    side = sched[-1][1] * vae.cfg.downsample
    img = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        summed, bits = vae.encode(img, sched)
        assert [tuple(b.shape) for b in bits] == [(1, 1, h, w, vae.cfg.codebook_dim) for _, h, w in sched]
        assert all(set(b.unique().tolist()) <= {0, 1} for b in bits)
        rebuilt = sum(vae.codes_to_grid(vae.bits_to_codes(b), sched[-1]) for b in bits).squeeze(2)
        torch.testing.assert_close(rebuilt, summed, atol=1e-5, rtol=0)
        out = vae.decode(summed)
    assert out.shape == img.shape and out.abs().max() <= 1


@pytest.mark.parametrize("changes", [
    dict(nm0=True), dict(head_depth=2), dict(head_aln=False), dict(head_aln=False, head_depth=2),
    dict(nm0=True, rms_norm=True, head_aln=False), dict(block_chunks=4), dict(ca_gamma=True, swiglu=True),
])
def test_config_read_off_variants(changes):
    """Flags the keys reveal, one by one, survive a state-dict round trip (on the meta device)."""
    from dataclasses import replace
    cfg = replace(make_models("2b")[0].cfg, **changes)
    with torch.device("meta"):
        model = Infinity(cfg)
    assert infinity_config_from_state_dict(model.state_dict()) == cfg
