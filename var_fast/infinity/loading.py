"""Reading Infinity transformer and BSQ VAE checkpoints into var_fast's modules, strictly.

Transformer: one ``.pth`` (weights only; upstream's slim checkpoints are plain state dicts) or
``.safetensors`` file, a list of shard files, or a directory of shards with a Hugging Face index json
(``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``, as the 8B ships). VAE: one file,
the state dict as is or under ``"vae"`` (what upstream's vae_model reads), in upstream's module layout
or with plain Conv2d/GroupNorm names (``encoder.conv_in.weight``), which upstream's load_cnn maps.
Every file is checked (kind, configuration, pair) before a model is built.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import torch

from ..checkpoint import CheckpointError, load_strict, read_state_dict
from .bsq_vae import BSQVAE
from .config import (BSQVAEConfig, InfinityConfig, bsq_vae_config_from_state_dict, check_pair,
                     infinity_config_from_state_dict)
from .transformer import Infinity

PathLike = Union[str, os.PathLike]
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
VAE_WRAPPERS = ("vae", "state_dict", "model", "module")


def shard_files(path: Union[PathLike, Sequence[PathLike]]) -> List[str]:
    """The files of a transformer checkpoint: [path] for one file, the list given, or a directory's
    shards as its index json names them."""
    if isinstance(path, (list, tuple)):
        if not path:
            raise CheckpointError("an empty list of transformer shard files was given")
        return [os.fspath(p) for p in path]
    path = os.fspath(path)
    if not os.path.isdir(path):
        return [path]
    for name in INDEX_FILES:
        index = os.path.join(path, name)
        if os.path.isfile(index):
            try:
                with open(index) as f:
                    weight_map = json.load(f)["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise CheckpointError(f"could not read the shard index {index!r} (no 'weight_map'): {err}") from err
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not os.path.isfile(os.path.join(path, f))]
            if missing:
                raise CheckpointError(f"shard index {index!r} names files that are not in {path!r}: {missing}")
            return [os.path.join(path, f) for f in files]
    raise CheckpointError(f"{path!r} is a directory without a shard index ({' or '.join(INDEX_FILES)})")


def read_transformer_state_dict(path: Union[PathLike, Sequence[PathLike]]) -> Tuple[Dict[str, torch.Tensor], str]:
    """(state dict, a name for messages) of one file or of all shards together."""
    files = shard_files(path)
    name = files[0] if len(files) == 1 else f"{os.path.dirname(files[0]) or '.'} ({len(files)} shards)"
    sd: Dict[str, torch.Tensor] = {}
    for f in files:
        part = read_state_dict(f, "Infinity transformer")
        twice = sorted(set(part) & set(sd))
        if twice:
            raise CheckpointError(f"shard {f!r} repeats {len(twice)} tensors of another shard (e.g. {twice[0]!r})")
        sd.update(part)
    return sd, name


def read_vae_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    return read_state_dict(path, "BSQ VAE", wrappers=VAE_WRAPPERS)


def _vae_layout(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Plain ``nn.Conv2d`` / ``nn.GroupNorm`` names -> upstream's wrapped ``.conv.`` / ``.norm.`` names
    (what upstream's load_cnn does for a file saved from plain modules)."""
    if "encoder.conv_in.conv.weight" in sd or "encoder.conv_in.weight" not in sd:
        return dict(sd)
    out = {}
    for k, v in sd.items():
        if k.startswith(("encoder.", "decoder.")) and k.endswith((".weight", ".bias")):
            stem, leaf = k.rsplit(".", 1)
            last = stem.rsplit(".", 1)[-1]
            if last.startswith("norm"):
                k = f"{stem}.norm.{leaf}"
            elif last.startswith("conv") or last in ("nin_shortcut", "q", "k", "v", "proj_out"):
                k = f"{stem}.conv.{leaf}"
        out[k] = v
    return out


def _with_vae_buffers(codebook_dim: int, sd: Dict[str, torch.Tensor], path: str) -> Dict[str, torch.Tensor]:
    """The quantizer's bit-weight buffers are derived from the bit count: filled in when a file left them
    out, checked when it has them."""
    want = 2 ** torch.arange(codebook_dim - 1, -1, -1)
    for key in ("quantizer.lfq.mask", "quantize.lfq.mask"):
        if key not in sd:
            sd[key] = want.clone()
        elif sd[key].device.type != "meta" and not torch.equal(sd[key].to(want.dtype), want):
            raise CheckpointError(f"BSQ VAE {path!r}: {key} is not the powers of two 2^{codebook_dim - 1} .. 1")
    return sd


def _build(cls, cfg, sd, path: str, what: str, device, dtype):
    with torch.device("meta"):
        model = cls(cfg)
    if hasattr(model, "adapt_state_dict"):
        sd = model.adapt_state_dict(sd)
    load_strict(model, sd, path, what, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def bsq_vae_from_state_dict(sd: Mapping[str, torch.Tensor], name: str = "<state dict>", *, device="cpu",
                            dtype=torch.float32) -> BSQVAE:
    """A BSQVAE from an in-memory state dict (upstream's layout or plain conv names), strictly."""
    sd = _vae_layout(sd)
    return _build_vae(bsq_vae_config_from_state_dict(sd, name), sd, name, device, dtype)


def infinity_from_state_dict(sd: Mapping[str, torch.Tensor], name: str = "<state dict>", *, device="cpu",
                             dtype=torch.float32, **flags) -> Infinity:
    """An Infinity transformer from an in-memory state dict, strictly (``flags``: the config's
    rope2d_normalized_by_hw / add_lvl_embeding_only_first_block)."""
    return _build_transformer(infinity_config_from_state_dict(sd, name, **flags), dict(sd), name, device, dtype)


def load_bsq_vae(path: PathLike, *, device="cpu", dtype=torch.float32) -> BSQVAE:
    path = os.fspath(path)
    sd = _vae_layout(read_vae_state_dict(path))
    cfg = bsq_vae_config_from_state_dict(sd, path)
    return _build_vae(cfg, sd, path, device, dtype)


def _build_vae(cfg: BSQVAEConfig, sd, path: str, device, dtype) -> BSQVAE:
    return _build(BSQVAE, cfg, _with_vae_buffers(cfg.codebook_dim, dict(sd), path), path, "BSQ VAE", device, dtype)


def load_infinity_transformer(path: Union[PathLike, Sequence[PathLike]], *, device="cpu", dtype=torch.float32,
                              rope2d_normalized_by_hw: int = 2, add_lvl_embeding_only_first_block: int = 1) -> Infinity:
    sd, name = read_transformer_state_dict(path)
    cfg = infinity_config_from_state_dict(sd, name, rope2d_normalized_by_hw=rope2d_normalized_by_hw,
                                          add_lvl_embeding_only_first_block=add_lvl_embeding_only_first_block)
    return _build_transformer(cfg, sd, name, device, dtype)


def _build_transformer(cfg: InfinityConfig, sd, name: str, device, dtype) -> Infinity:
    return _build(Infinity, cfg, sd, name, "Infinity transformer", device, dtype)


def load_infinity_files(transformer: Union[PathLike, Sequence[PathLike]], vae: PathLike, *, device="cpu",
                        dtype=torch.float32, rope2d_normalized_by_hw: int = 2,
                        add_lvl_embeding_only_first_block: int = 1) -> Tuple[Infinity, BSQVAE]:
    """(Infinity, BSQVAE) from checkpoint files; both files and their pairing are checked before either model
    is built. ``dtype`` is the weights' dtype (the reference sampler is exact in float32)."""
    vae_path = os.fspath(vae)
    sd, name = read_transformer_state_dict(transformer)
    vae_sd = _vae_layout(read_vae_state_dict(vae_path))
    cfg = infinity_config_from_state_dict(sd, name, rope2d_normalized_by_hw=rope2d_normalized_by_hw,
                                          add_lvl_embeding_only_first_block=add_lvl_embeding_only_first_block)
    vae_cfg = bsq_vae_config_from_state_dict(vae_sd, vae_path)
    check_pair(cfg, vae_cfg, name, vae_path)
    model = _build_transformer(cfg, sd, name, device, dtype)
    return model, _build_vae(vae_cfg, vae_sd, vae_path, device, dtype)
