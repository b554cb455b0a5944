"""Checkpoint format and configuration detection: exactly the upstream layout, no big allocations."""
import json
import os

import pytest
import torch

import var_fast
from var_fast.checkpoint import (CheckpointError, detect_patch_nums, patch_layouts, read_state_dict,
                                 vae_config_from_state_dict, var_config_from_state_dict)
from var_fast.models import PATCH_NUMS_256, PATCH_NUMS_512, VAR, VARConfig, VQVAE, VQVAEConfig
from model_factory import make_models, save_pair

with open(os.path.join(os.path.dirname(__file__), "data", "reference_state_dicts.json")) as f:
    REFERENCE = json.load(f)  # keys, shapes and dtypes of upstream models (generated from FoundationVision/VAR)


def _layout(module: torch.nn.Module):
    return {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in module.state_dict().items()}


def _meta_state_dict(layout):
    return {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta") for k, (shape, dtype) in layout.items()}


@pytest.mark.parametrize("name,config", [
    ("var_d16", VARConfig.for_depth(16)),
    ("var_d36", VARConfig.for_depth(36, shared_aln=True, patch_nums=PATCH_NUMS_512)),
])
def test_var_state_dict_is_upstream_layout(name, config):
    with torch.device("meta"):
        model = VAR(config)
    assert _layout(model) == REFERENCE[name]


def test_vae_state_dict_is_upstream_layout():
    with torch.device("meta"):
        model = VQVAE(VQVAEConfig())
    assert _layout(model) == REFERENCE["vae_ch160v4096z32"]


@pytest.mark.parametrize("name,expected", [
    ("var_d16", VARConfig.for_depth(16)),
    ("var_d36", VARConfig.for_depth(36, shared_aln=True, patch_nums=PATCH_NUMS_512)),
])
def test_config_read_off_upstream_layout(name, expected):
    assert var_config_from_state_dict(_meta_state_dict(REFERENCE[name]), name) == expected


def test_vae_config_read_off_upstream_layout():
    cfg = vae_config_from_state_dict(_meta_state_dict(REFERENCE["vae_ch160v4096z32"]), "vae")
    assert cfg == VQVAEConfig()


@pytest.mark.parametrize("depth,shared,patches", [(16, False, PATCH_NUMS_256), (20, False, PATCH_NUMS_256),
                                                  (24, False, PATCH_NUMS_256), (30, False, PATCH_NUMS_256),
                                                  (36, True, PATCH_NUMS_512)])
def test_config_detection_every_published_depth(depth, shared, patches):
    expected = VARConfig.for_depth(depth, shared_aln=shared, patch_nums=patches)
    with torch.device("meta"):
        sd = VAR(expected).state_dict()
    cfg = var_config_from_state_dict(sd, f"var_d{depth}.pth")
    assert cfg == expected
    assert cfg.embed_dim == 64 * depth and cfg.num_heads == depth and cfg.num_classes == 1000


def test_patch_layouts_enumeration():
    assert PATCH_NUMS_256 in patch_layouts(10, 680, first=1, limit=1000)
    assert patch_layouts(3, 1 + 4 + 16, first=1) == [(1, 2, 4)]
    assert patch_layouts(2, 1 + 9, first=1) == [(1, 3)]
    assert patch_layouts(2, 7) == []


def _tiny_sd(patch_nums):
    cfg = VARConfig(depth=1, embed_dim=64, num_heads=1, mlp_hidden=128, num_classes=3, patch_nums=patch_nums,
                    Cvae=4, vocab_size=16)
    with torch.device("meta"):
        return VAR(cfg).state_dict()


def test_unique_nonstandard_layout_is_detected():
    assert detect_patch_nums(_tiny_sd((1, 2, 4)), "x") == (1, 2, 4)


def test_ambiguous_layout_asks_for_patch_nums():
    # 1+4+9+64 == 1+16+25+36 == 78: shapes alone cannot tell these apart
    assert patch_layouts(4, 78, first=1) == [(1, 2, 3, 8), (1, 4, 5, 6)]
    sd = _tiny_sd((1, 4, 5, 6))  # meta tensors: lvl_1L has no values to read
    with pytest.raises(CheckpointError, match="pass patch_nums"):
        detect_patch_nums(sd, "x.pth")
    assert detect_patch_nums(sd, "x.pth", patch_nums=(1, 4, 5, 6)) == (1, 4, 5, 6)


def test_level_buffer_resolves_ambiguity():
    sd = dict(_tiny_sd((1, 4, 5, 6)))
    sd["lvl_1L"] = torch.cat([torch.full((p * p,), i) for i, p in enumerate((1, 4, 5, 6))]).view(1, -1)
    assert detect_patch_nums(sd, "x.pth") == (1, 4, 5, 6)


def test_explicit_patch_nums_checked():
    sd = _tiny_sd((1, 2, 4))
    assert detect_patch_nums(sd, "x", patch_nums=[1, 2, 4]) == (1, 2, 4)
    with pytest.raises(CheckpointError, match="does not fit"):
        detect_patch_nums(sd, "x.pth", patch_nums=[1, 2, 3])


# ---- files and errors --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("ckpt"))
    var, vae = make_models("d2")
    return save_pair(var, vae, folder)


def test_load_pth_and_safetensors_agree(tiny_files, tmp_path):
    var, vae = make_models("d2")
    st = save_pair(var, vae, str(tmp_path), fmt="safetensors")
    a = var_fast.load(*tiny_files, device="cpu", backend="reference")
    b = var_fast.load(*st, device="cpu", backend="reference")
    assert torch.equal(a.sample([1, 2], seed=3), b.sample([1, 2], seed=3))
    assert a.var.config == b.var.config and a.vae.config == b.vae.config


def test_missing_file(tiny_files, tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nope.pth"):
        var_fast.load(str(tmp_path / "nope.pth"), tiny_files[1])


def test_truncated_file(tiny_files, tmp_path):
    data = open(tiny_files[0], "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="could not read VAR checkpoint.*cut.pth"):
        var_fast.load(str(cut), tiny_files[1])


def test_swapped_files(tiny_files):
    with pytest.raises(CheckpointError, match="is a VQVAE checkpoint"):
        var_fast.load(tiny_files[1], tiny_files[0])


def test_vae_given_twice(tiny_files):
    with pytest.raises(CheckpointError, match="is a VQVAE checkpoint"):
        var_fast.load(tiny_files[1], tiny_files[1])


class _NotATensor:
    pass


def test_code_is_never_unpickled(tmp_path, tiny_files):
    evil = tmp_path / "evil.pth"
    torch.save({"x": _NotATensor()}, evil)
    with pytest.raises(CheckpointError, match="weights-only"):
        read_state_dict(str(evil))


def test_mismatched_pair(tmp_path, tiny_files):
    cfg = VQVAEConfig(vocab_size=32, z_channels=8, ch=32, patch_nums=(1, 2, 3, 4))
    other = VQVAE(cfg)
    path = tmp_path / "other_vae.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not match VQVAE"):
        var_fast.load(tiny_files[0], str(path))


def test_incomplete_state_dict_names_missing_key(tmp_path, tiny_files):
    sd = torch.load(tiny_files[0], weights_only=True)
    del sd["blocks.1.attn.proj.weight"]
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="broken.pth.*blocks.1.attn.proj.weight"):
        var_fast.load(str(path), tiny_files[1])


def test_unknown_patch_layout(tmp_path, tiny_files):
    sd = torch.load(tiny_files[0], weights_only=True)
    sd["pos_1LC"] = torch.zeros(1, 29, sd["pos_1LC"].shape[-1])  # 4 scales, 29 tokens: no square layout
    sd.pop("lvl_1L")
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="unknown patch layout in .*odd.pth"):
        var_fast.load(str(path), tiny_files[1])


@pytest.mark.parametrize("content", [b"these are not weights\n", b"", b"\x00" * 64])
def test_not_a_checkpoint_says_what_the_file_is_not(tmp_path, tiny_files, content):
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        var_fast.load(str(path), tiny_files[1])
    assert str(err.value) == (f"VAR checkpoint '{path}' is not a PyTorch checkpoint (.pth zip/pickle) or "
                              f"safetensors file")


def test_legacy_pickle_and_safetensors_are_recognised(tmp_path, tiny_files):
    from var_fast.checkpoint import file_format
    sd = {"w": torch.ones(2)}
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    from safetensors.torch import save_file
    save_file(sd, str(tmp_path / "w.safetensors"))
    assert file_format(str(tmp_path / "legacy.pth")) == "pickle"
    assert file_format(str(tmp_path / "w.safetensors")) == "safetensors"
    assert file_format(tiny_files[0]) == "zip"
    assert torch.equal(read_state_dict(tmp_path / "legacy.pth")["w"], sd["w"])


def test_both_files_missing_are_named_together(tmp_path):
    with pytest.raises(CheckpointError, match="VAR checkpoint file not found: .*a.pth'; VQVAE checkpoint file "
                                              "not found: .*b.pth'"):
        var_fast.load(str(tmp_path / "a.pth"), str(tmp_path / "b.pth"))
