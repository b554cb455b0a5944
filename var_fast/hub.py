"""Published checkpoints by name: VAR's (d16, d20, d24, d30, d36) from https://huggingface.co/FoundationVision/var,
CoDe's pairs (code-6 .. code-9), and Infinity's (infinity-2b, infinity-8b, infinity-8b-512) from
https://huggingface.co/FoundationVision/Infinity with their text encoder https://huggingface.co/google/flan-t5-xl.

Files are fetched with ``huggingface_hub.hf_hub_download``: its cache and its environment variables
(HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN, HF_ENDPOINT, HF_HUB_DISABLE_PROGRESS_BARS) apply, and
it shows the download's progress. A file is downloaded once; later runs, offline too, read the cache.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Optional, Tuple

from .checkpoint import CheckpointError

HF_REPO = "FoundationVision/var"
VAE_FILE = "vae_ch160v4096z32.pth"
MODEL_NAMES = {f"d{depth}": f"var_d{depth}.pth" for depth in (16, 20, 24, 30, 36)}
# CoDe's fine-tuned drafter/refiner pairs (d30 + d16), one per number of drafted scales N
CODE_REPO = "Zigeng/VAR_CoDe"
CODE_PAIR_NAMES = {f"code-{n}": n for n in (6, 7, 8, 9)}

# Infinity: transformer (a file, or a folder of safetensors shards listed by its model.safetensors.index.json),
# BSQ VAE, and the pixel budget it was trained for (upstream README, scripts/infer.sh, tools/interactive_infer*.ipynb)
INFINITY_REPO = "FoundationVision/Infinity"
INFINITY_MODEL_NAMES = {
    "infinity-2b": ("infinity_2b_reg.pth", "infinity_vae_d32reg.pth", "1M"),
    "infinity-8b": ("infinity_8b_weights", "infinity_vae_d56_f8_14_patchify.pth", "1M"),
    "infinity-8b-512": ("infinity_8b_512x512_weights", "infinity_vae_d56_f8_14_patchify.pth", "0.25M"),
}
SHARD_INDEX = "model.safetensors.index.json"
# the text encoder: the tokenizer's files and the weights' index (its shards are read off the index)
T5_REPO = "google/flan-t5-xl"
T5_FILES = ("config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", SHARD_INDEX)


def is_code_pair_name(text) -> bool:
    return isinstance(text, str) and text in CODE_PAIR_NAMES


def is_model_name(text) -> bool:
    return isinstance(text, str) and text in MODEL_NAMES


def is_infinity_name(text) -> bool:
    return isinstance(text, str) and text in INFINITY_MODEL_NAMES


def known_names() -> str:
    """Every published name load() takes, for error messages."""
    return ", ".join([*MODEL_NAMES, *CODE_PAIR_NAMES, *INFINITY_MODEL_NAMES])


def looks_like_model_name(text) -> bool:
    """A bare name such as "d17" or "var_d16" (no folder, no suffix, no such file): what ``load`` reports as an
    unknown model rather than as a checkpoint given without its VQVAE."""
    return (isinstance(text, str) and re.fullmatch(r"[A-Za-z0-9_-]+", text) is not None
            and not os.path.exists(text))


def checkpoint_files(name: str) -> Tuple[str, str]:
    """(VAR file, VQVAE file) of a published model, as named in the Hugging Face repository."""
    if not is_model_name(name):
        raise ValueError(f"unknown model {name}; known: {', '.join(MODEL_NAMES)}")
    return MODEL_NAMES[name], VAE_FILE


def file_url(filename: str, repo: str = HF_REPO) -> str:
    return f"https://huggingface.co/{repo}/resolve/main/{filename}"


PROBE_TIMEOUT_S = 5.0  # one attempt to reach the Hub before a download; no retries (huggingface_hub retries 5x)


VAR_PATHS_HINT = "--var/--vae, or var_fast.load(var_path, vae_path)"
INFINITY_PATHS_HINT = ("--transformer/--vae/--text-encoder, or var_fast.load(transformer=..., vae=..., "
                       "text_encoder=...)")


def _not_available(name: str, missing, cache: str, why: str, repo: str = HF_REPO,
                   paths_hint: str = VAR_PATHS_HINT) -> CheckpointError:
    files = " and ".join(missing)
    return CheckpointError(
        f"model {name} needs {files} from https://huggingface.co/{repo}; "
        f"{'it is' if len(missing) == 1 else 'they are'} not in the Hugging Face cache ({cache}) and {why}. "
        f"Either run again online (downloaded once into the cache), or on a machine with internet run "
        f"`hf download {repo} {' '.join(missing)}` and copy {cache}/models--{repo.replace('/', '--')} "
        f"into this machine's {cache} (HF_HUB_CACHE), or download "
        + ", ".join(file_url(f, repo) for f in missing)
        + f" and pass the files' paths ({paths_hint}). "
        "With HF_HUB_OFFLINE=1 the cache alone is used and the network is not tried.")


def _unreachable(filename: str, repo: str = HF_REPO):
    """None when the Hub answers for ``filename`` (one HEAD request, no retries, PROBE_TIMEOUT_S), else why not."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    try:
        get_hf_file_metadata(hf_hub_url(repo, filename), timeout=PROBE_TIMEOUT_S)
    except HfHubHTTPError:
        return None  # the Hub answered (401, 404, ...): hf_hub_download reports it
    except Exception as err:  # connection refused, no DNS, timeout, proxy or TLS failure
        first = (str(err).strip().splitlines() or [""])[0]
        return f"the Hugging Face Hub ({constants.ENDPOINT}) could not be reached ({type(err).__name__}: {first})"
    return None


def published_checkpoints(name: str) -> Tuple[str, str]:
    """Local paths of a published model's VAR and VQVAE files, downloaded into the Hugging Face cache
    when not there yet. Before a download the Hub is tried once, briefly: offline (or with HF_HUB_OFFLINE=1)
    the cached files are used, and a file not cached is a CheckpointError naming the files and where to put
    them, within seconds rather than after huggingface_hub's retries."""
    var_path, vae_path = fetch_files(name, HF_REPO, checkpoint_files(name))
    return var_path, vae_path


def code_pair_checkpoints(name: str) -> Tuple[str, str, str, int]:
    """(drafter, refiner, VQVAE paths, N) of a CoDe fine-tuned pair "code-N" (huggingface.co/Zigeng/VAR_CoDe:
    drafter_N.pth and refiner_N.pth, with the published VQVAE), through the Hugging Face cache."""
    if not is_code_pair_name(name):
        raise ValueError(f"unknown CoDe pair {name!r}: the fine-tuned pairs are {', '.join(CODE_PAIR_NAMES)}")
    n = CODE_PAIR_NAMES[name]
    drafter, refiner = fetch_files(name, CODE_REPO, (f"drafter_{n}.pth", f"refiner_{n}.pth"))
    (vae,) = fetch_files(name, HF_REPO, (VAE_FILE,))
    return drafter, refiner, vae, n


_PROBE = "probe"  # fetch_files' default: try the Hub once itself


def fetch_files(name: str, repo: str, wanted, offline: Optional[str] = _PROBE,
                paths_hint: str = VAR_PATHS_HINT) -> Tuple[str, ...]:
    """Local paths of ``wanted`` files of a Hugging Face repository (downloaded once into its cache).
    ``offline``: ``hub_offline_reason`` when the caller probed the Hub already (None: reachable)."""
    try:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as err:
        raise RuntimeError(f"var_fast.load({name!r}) needs huggingface_hub (pip install huggingface_hub), or "
                           f"download {' and '.join(file_url(f, repo) for f in wanted)} and pass their paths") from err
    # one brief attempt to reach the Hub, before any download or update check (each would retry or wait)
    if offline is _PROBE:
        offline = hub_offline_reason(repo, wanted[0])
    paths, missing = [], []
    for filename in wanted:
        if offline is None and not isinstance(try_to_load_from_cache(repo, filename), str):
            print(f"[var_fast] downloading {filename} from {constants.ENDPOINT}/{repo} into "
                  f"{constants.HF_HUB_CACHE} (once)", file=sys.stderr, flush=True)
        try:
            # not reachable: the cache only (no update check of a cached file, which would wait again)
            paths.append(hf_hub_download(repo, filename, local_files_only=offline is not None))
        except LocalEntryNotFoundError:
            missing.append(filename)
        except HfHubHTTPError as err:
            raise CheckpointError(f"could not download {filename} from https://huggingface.co/{repo}: "
                                  f"{str(err).strip().splitlines()[0]}") from err
    if missing:
        raise _not_available(name, missing, constants.HF_HUB_CACHE, offline or "it could not be downloaded", repo,
                             paths_hint)
    return tuple(paths)


def hub_offline_reason(repo: str, filename: str) -> Optional[str]:
    """None when the Hub is to be used, else why not ("HF_HUB_OFFLINE is set", or it could not be reached)."""
    from huggingface_hub import constants
    return "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else _unreachable(filename, repo)


def _sharded(name: str, repo: str, folder: str, offline: Optional[str]) -> str:
    """The local folder of a sharded safetensors checkpoint: its index, then every shard the index lists."""
    import json
    (index,) = fetch_files(name, repo, (f"{folder}/{SHARD_INDEX}" if folder else SHARD_INDEX,), offline,
                           INFINITY_PATHS_HINT)
    try:
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{index}: not a safetensors shard index (a weight_map of tensor -> file): {err}") from err
    bad = [s for s in shards if not isinstance(s, str) or os.path.basename(s) != s or not s.endswith(".safetensors")]
    if bad:
        raise CheckpointError(f"{index}: the weight_map names files that are not .safetensors shards beside it: {bad[:3]}")
    fetch_files(name, repo, tuple(f"{folder}/{s}" if folder else s for s in shards), offline, INFINITY_PATHS_HINT)
    return os.path.dirname(index)


def _check_cached(name: str, wanted, offline: str) -> None:
    """A CheckpointError listing, per repository, the files of ``wanted`` ({repo: files}) not in the cache."""
    from huggingface_hub import constants, try_to_load_from_cache
    missing = {repo: [f for f in files if not isinstance(try_to_load_from_cache(repo, f), str)]
               for repo, files in wanted.items()}
    missing = {repo: files for repo, files in missing.items() if files}
    if len(missing) > 1:  # one repository's files alone: fetch_files says it the usual way
        raise CheckpointError(" Also: ".join(str(_not_available(name, files, constants.HF_HUB_CACHE, offline, repo,
                                                                INFINITY_PATHS_HINT)) for repo, files in missing.items()))


def infinity_checkpoints(name: str) -> Tuple[str, str, str]:
    """(transformer, VAE, text encoder folder) of a published Infinity model, through the Hugging Face cache
    (downloaded once): the transformer is a .pth file or a folder of safetensors shards, the text encoder the
    folder of google/flan-t5-xl's config, tokenizer and weights (every shard its index lists)."""
    if not is_infinity_name(name):
        raise ValueError(f"unknown Infinity model {name!r}; known: {', '.join(INFINITY_MODEL_NAMES)}")
    transformer, vae, _ = INFINITY_MODEL_NAMES[name]
    offline = hub_offline_reason(INFINITY_REPO, vae)
    if offline is not None:  # from the cache only: name every file missing in either repository at once
        wanted = {INFINITY_REPO: (transformer if transformer.endswith(".pth") else f"{transformer}/{SHARD_INDEX}", vae),
                  T5_REPO: T5_FILES}
        _check_cached(name, wanted, offline)
    if transformer.endswith(".pth"):
        (transformer_path,) = fetch_files(name, INFINITY_REPO, (transformer,), offline, INFINITY_PATHS_HINT)
    else:
        transformer_path = _sharded(name, INFINITY_REPO, transformer, offline)
    (vae_path,) = fetch_files(name, INFINITY_REPO, (vae,), offline, INFINITY_PATHS_HINT)
    t5_files = fetch_files(name, T5_REPO, T5_FILES, offline, INFINITY_PATHS_HINT)
    _sharded(name, T5_REPO, "", offline)
    return transformer_path, vae_path, os.path.dirname(t5_files[0])
