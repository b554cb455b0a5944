"""Published checkpoints by name (d16, d20, d24, d30, d36), from https://huggingface.co/FoundationVision/var.

Files are fetched with ``huggingface_hub.hf_hub_download``: its cache and its environment variables
(HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN, HF_ENDPOINT, HF_HUB_DISABLE_PROGRESS_BARS) apply, and
it shows the download's progress. A file is downloaded once; later runs, offline too, read the cache.
"""
from __future__ import annotations

import sys
from typing import Tuple

from .checkpoint import CheckpointError

HF_REPO = "FoundationVision/var"
VAE_FILE = "vae_ch160v4096z32.pth"
MODEL_NAMES = {f"d{depth}": f"var_d{depth}.pth" for depth in (16, 20, 24, 30, 36)}
# CoDe's fine-tuned drafter/refiner pairs (d30 + d16), one per number of drafted scales N
CODE_REPO = "Zigeng/VAR_CoDe"
CODE_PAIR_NAMES = {f"code-{n}": n for n in (6, 7, 8, 9)}


def is_code_pair_name(text) -> bool:
    return isinstance(text, str) and text in CODE_PAIR_NAMES


def is_model_name(text) -> bool:
    return isinstance(text, str) and text in MODEL_NAMES


def checkpoint_files(name: str) -> Tuple[str, str]:
    """(VAR file, VQVAE file) of a published model, as named in the Hugging Face repository."""
    if not is_model_name(name):
        raise ValueError(f"unknown model {name!r}: the published models are {', '.join(MODEL_NAMES)}")
    return MODEL_NAMES[name], VAE_FILE


def file_url(filename: str, repo: str = HF_REPO) -> str:
    return f"https://huggingface.co/{repo}/resolve/main/{filename}"


def _not_available(name: str, missing, cache: str, offline: bool, repo: str = HF_REPO) -> CheckpointError:
    files = " and ".join(missing)
    why = ("HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub could not be reached")
    return CheckpointError(
        f"model {name} needs {files} from https://huggingface.co/{repo}; "
        f"{'it is' if len(missing) == 1 else 'they are'} not in the Hugging Face cache ({cache}) and {why}. "
        f"Either run again online (downloaded once into the cache), or on a machine with internet run "
        f"`hf download {repo} {' '.join(missing)}` and copy {cache}/models--{repo.replace('/', '--')} "
        f"into this machine's {cache} (HF_HUB_CACHE), or download "
        + ", ".join(file_url(f, repo) for f in missing)
        + " and pass the files' paths (--var/--vae, or var_fast.load(var_path, vae_path)).")


def published_checkpoints(name: str) -> Tuple[str, str]:
    """Local paths of a published model's VAR and VQVAE files, downloaded into the Hugging Face cache
    when not there yet. Offline with a file not cached: a CheckpointError naming the files and where
    to put them."""
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


def fetch_files(name: str, repo: str, wanted) -> Tuple[str, ...]:
    """Local paths of ``wanted`` files of a Hugging Face repository (downloaded once into its cache)."""
    try:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as err:
        raise RuntimeError(f"var_fast.load({name!r}) needs huggingface_hub (pip install huggingface_hub), or "
                           f"download {' and '.join(file_url(f, repo) for f in wanted)} and pass their paths") from err
    paths, missing = [], []
    for filename in wanted:
        if not isinstance(try_to_load_from_cache(repo, filename), str) and not constants.is_offline_mode():
            print(f"[var_fast] downloading {filename} from https://huggingface.co/{repo} into "
                  f"{constants.HF_HUB_CACHE} (once)", file=sys.stderr, flush=True)
        try:
            paths.append(hf_hub_download(repo, filename))
        except LocalEntryNotFoundError:
            missing.append(filename)
        except HfHubHTTPError as err:
            raise CheckpointError(f"could not download {filename} from https://huggingface.co/{repo}: "
                                  f"{str(err).strip().splitlines()[0]}") from err
    if missing:
        raise _not_available(name, missing, constants.HF_HUB_CACHE, constants.is_offline_mode(), repo)
    return tuple(paths)
