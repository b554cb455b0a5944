"""Reading VAR / VQVAE checkpoint files and inferring the model configuration from the weights.

Only tensors are read: ``.pth``/``.pt`` files through ``torch.load(weights_only=True)`` and
``.safetensors`` through safetensors. Every detection here uses shapes only, so it also works on
meta tensors (no allocation) and names the file and the entry that does not fit when it fails.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

from .models import PATCH_NUMS_256, PATCH_NUMS_512, VARConfig, VQVAEConfig

StateDict = Mapping[str, torch.Tensor]

# (number of scales, number of tokens) -> patch layout of the published checkpoints
KNOWN_PATCH_LAYOUTS = {
    (len(PATCH_NUMS_256), sum(p * p for p in PATCH_NUMS_256)): PATCH_NUMS_256,
    (len(PATCH_NUMS_512), sum(p * p for p in PATCH_NUMS_512)): PATCH_NUMS_512,
}


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not hold what it should."""


def check_files_exist(files: Sequence[Tuple[str | os.PathLike, str]]) -> None:
    """(path, what) pairs: one CheckpointError naming every file that is missing."""
    missing = [f"{what} file not found: {os.fspath(path)!r}" for path, what in files if not os.path.isfile(path)]
    if missing:
        raise CheckpointError("; ".join(missing))


def file_format(path: str) -> Optional[str]:
    """"zip" (torch.save), "pickle" (legacy torch.save), "safetensors", or None, from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":  # also a truncated zip: it fails later as "could not read"
        return "zip"
    if head[:1] == b"\x80":  # pickle protocol 2 or later
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path):
        return "safetensors"  # 8-byte header length, then the JSON header
    return None


def _complete_zip(path: str) -> bool:
    import zipfile
    return zipfile.is_zipfile(path)


def read_state_dict(path: str | os.PathLike, what: str = "checkpoint",
                    wrappers: Sequence[str] = ("state_dict", "model", "module")) -> Dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.pt``/``.bin`` (weights only) or ``.safetensors`` file, on the CPU.
    A dict that holds the state dict under one of ``wrappers`` is unwrapped (in that order)."""
    path = os.fspath(path)
    check_files_exist([(path, what)])
    fmt = file_format(path)
    if fmt is None:
        raise CheckpointError(f"{what} {path!r} is not a PyTorch checkpoint (.pth zip/pickle) or safetensors file")
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file
            sd = load_file(path, device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=_complete_zip(path))
    except Exception as err:  # truncated zip, pickle that needs code, foreign format ...
        raise CheckpointError(f"could not read {what} {path!r} (truncated, corrupt, or not a weights-only "
                              f"PyTorch/safetensors file): {type(err).__name__}: {str(err).strip().splitlines()[0]}") from err
    for wrapper in wrappers:  # common training-script wrappers
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{what} {path!r} does not hold a state dict of tensors")
    return {_strip_prefix(k): v for k, v in sd.items()}


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _indices(sd: StateDict, pattern: str) -> List[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd for m in [rx.match(k)] if m})


def _require(sd: StateDict, keys: Iterable[str], path: str, what: str, hint: str = "") -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise CheckpointError(f"{path!r} is not a {what} checkpoint: it has no {', '.join(repr(k) for k in missing)}"
                              + (f" ({hint})" if hint else ""))


def looks_like_vae(sd: StateDict) -> bool:
    return "quantize.embedding.weight" in sd and "encoder.conv_in.weight" in sd


def looks_like_var(sd: StateDict) -> bool:
    return "class_emb.weight" in sd and "pos_1LC" in sd


# ---- patch layouts ------------------------------------------------------------------------------
def patch_layouts(num_scales: int, num_tokens: int, first: Optional[int] = None, limit: int = 2) -> List[Tuple[int, ...]]:
    """Strictly increasing sequences of ``num_scales`` side lengths whose squares sum to ``num_tokens``
    (starting with ``first`` when given); at most ``limit`` of them."""
    found: List[Tuple[int, ...]] = []

    def extend(prefix: List[int], remaining: int, left: int) -> None:
        if len(found) >= limit:
            return
        if left == 0:
            if remaining == 0:
                found.append(tuple(prefix))
            return
        lo = prefix[-1] + 1 if prefix else (first or 1)
        hi = first if (not prefix and first) else int(remaining ** 0.5)
        for pn in range(lo, hi + 1):
            # the smallest possible rest: pn, pn+1, ..., pn+left-1
            if sum((pn + i) ** 2 for i in range(left)) > remaining:
                break
            extend(prefix + [pn], remaining - pn * pn, left - 1)

    extend([], num_tokens, num_scales)
    return found


def detect_patch_nums(sd: StateDict, path: str, patch_nums: Optional[Sequence[int]] = None) -> Tuple[int, ...]:
    S = sd["lvl_embed.weight"].shape[0]
    L = sd["pos_1LC"].shape[1]
    first_l = sd["pos_start"].shape[1]
    if patch_nums is not None:
        pns = tuple(int(p) for p in patch_nums)
        if len(pns) != S or sum(p * p for p in pns) != L or pns[0] ** 2 != first_l:
            raise CheckpointError(f"patch_nums={pns} does not fit {path!r}: it has {S} scales and {L} tokens "
                                  f"(patch_nums gives {len(pns)} scales and {sum(p * p for p in pns)} tokens)")
        return pns
    if (S, L) in KNOWN_PATCH_LAYOUTS:
        return KNOWN_PATCH_LAYOUTS[(S, L)]
    lvl = sd.get("lvl_1L")
    if lvl is not None and lvl.device.type != "meta" and lvl.numel() == L:
        counts = torch.bincount(lvl.reshape(-1).long(), minlength=S).tolist()
        pns = tuple(round(c ** 0.5) for c in counts)
        if all(p * p == c and p > 0 for p, c in zip(pns, counts)):
            return pns
    first = round(first_l ** 0.5)
    layouts = patch_layouts(S, L, first=first if first * first == first_l else None)
    if len(layouts) == 1:
        return layouts[0]
    raise CheckpointError(
        f"unknown patch layout in {path!r}: {S} scales and {L} tokens "
        + ("fit no increasing sequence of square token maps" if not layouts
           else f"fit several sequences (e.g. {layouts[0]} and {layouts[1]})")
        + "; pass patch_nums= explicitly")


# ---- configurations -----------------------------------------------------------------------------
def var_config_from_state_dict(sd: StateDict, path: str = "<state dict>",
                               patch_nums: Optional[Sequence[int]] = None,
                               num_heads: Optional[int] = None) -> VARConfig:
    """Configuration of a VAR transformer read off its weights.

    The head count is stored only with attn_l2_norm (``scale_mul_1H11``); otherwise it is
    ``num_heads`` or, by the published convention, one head per 64 channels.
    """
    if looks_like_vae(sd) and not looks_like_var(sd):
        raise CheckpointError(f"{path!r} is a VQVAE checkpoint, but a VAR transformer checkpoint was expected "
                              f"(did you swap the VAR and VAE files?)")
    _require(sd, ["word_embed.weight", "class_emb.weight", "pos_start", "pos_1LC", "lvl_embed.weight",
                  "head.weight", "blocks.0.attn.mat_qkv.weight", "blocks.0.ffn.fc1.weight"], path, "VAR transformer")
    depth = len(_indices(sd, r"blocks\.(\d+)\."))
    C, Cvae = sd["word_embed.weight"].shape
    shared_aln = "blocks.0.ada_gss" in sd
    l2 = "blocks.0.attn.scale_mul_1H11" in sd
    heads = sd["blocks.0.attn.scale_mul_1H11"].shape[1] if l2 else (num_heads or max(1, C // 64))
    if num_heads is not None and heads != num_heads:
        raise CheckpointError(f"num_heads={num_heads} does not fit {path!r}, whose scale_mul_1H11 has {heads} heads")
    if C % heads:
        raise CheckpointError(f"{path!r}: width {C} is not divisible by {heads} heads")
    if shared_aln:
        _require(sd, ["shared_ada_lin.1.weight"], path, "shared-AdaLN VAR transformer")
    cfg = VARConfig(
        depth=depth, embed_dim=C, num_heads=heads, mlp_hidden=sd["blocks.0.ffn.fc1.weight"].shape[0],
        num_classes=sd["class_emb.weight"].shape[0] - 1, shared_aln=shared_aln, attn_l2_norm=l2,
        patch_nums=detect_patch_nums(sd, path, patch_nums), Cvae=Cvae, vocab_size=sd["head.weight"].shape[0])
    return cfg


def vae_config_from_state_dict(sd: StateDict, path: str = "<state dict>",
                               patch_nums: Sequence[int] = PATCH_NUMS_256) -> VQVAEConfig:
    if looks_like_var(sd) and not looks_like_vae(sd):
        raise CheckpointError(f"{path!r} is a VAR transformer checkpoint, but a VQVAE checkpoint was expected "
                              f"(did you swap the VAR and VAE files?)")
    _require(sd, ["encoder.conv_in.weight", "quant_conv.weight", "post_quant_conv.weight",
                  "quantize.embedding.weight", "decoder.conv_out.weight"], path, "VQVAE")
    ch = sd["encoder.conv_in.weight"].shape[0]
    levels = _indices(sd, r"encoder\.down\.(\d+)\.")
    ch_mult = tuple(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels)
    num_res_blocks = len(_indices(sd, r"encoder\.down\.0\.block\.(\d+)\."))
    partially = _indices(sd, r"quantize\.quant_resi\.qresi_ls\.(\d+)\.weight")
    non_shared = _indices(sd, r"quantize\.quant_resi\.(\d+)\.weight")
    if partially:
        share, counts = len(partially), 0
    elif "quantize.quant_resi.qresi.weight" in sd:
        share, counts = 1, 0
    elif non_shared:
        share, counts = 0, len(non_shared)
    else:
        share, counts = 4, 0
    return VQVAEConfig(
        vocab_size=sd["quantize.embedding.weight"].shape[0], z_channels=sd["quant_conv.weight"].shape[0], ch=ch,
        ch_mult=ch_mult, num_res_blocks=num_res_blocks,
        using_sa=f"encoder.down.{levels[-1]}.attn.0.norm.weight" in sd,
        using_mid_sa="encoder.mid.attn_1.norm.weight" in sd,
        quant_conv_ks=sd["quant_conv.weight"].shape[-1], share_quant_resi=share, default_qresi_counts=counts,
        patch_nums=tuple(patch_nums))


def check_pair(var_cfg: VARConfig, vae_cfg: VQVAEConfig, var_path: str, vae_path: str) -> None:
    if var_cfg.Cvae != vae_cfg.z_channels or var_cfg.vocab_size != vae_cfg.vocab_size:
        raise CheckpointError(
            f"VAR {var_path!r} (Cvae={var_cfg.Cvae}, vocab={var_cfg.vocab_size}) does not match VQVAE {vae_path!r} "
            f"(Cvae={vae_cfg.z_channels}, vocab={vae_cfg.vocab_size})")


def load_strict(module: torch.nn.Module, sd: StateDict, path: str, what: str, assign: bool = False) -> None:
    try:
        module.load_state_dict(dict(sd), strict=True, assign=assign)
    except RuntimeError as err:
        raise CheckpointError(f"{what} checkpoint {path!r} does not match the model read off its weights: "
                              f"{' '.join(str(err).split())}") from err
