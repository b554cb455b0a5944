"""Published checkpoints by name (d16, d20, d24, d30, d36), from https://huggingface.co/FoundationVision/var.

Files are fetched with ``huggingface_hub.hf_hub_download``: its cache and its environment variables
(HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN, HF_ENDPOINT, HF_HUB_DISABLE_PROGRESS_BARS) apply, and
it shows the download's progress. A file is downloaded once; later runs, offline too, read the cache.
"""
from __future__ import annotations

import os
import re
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


def _not_available(name: str, missing, cache: str, why: str, repo: str = HF_REPO) -> CheckpointError:
    files = " and ".join(missing)
    return CheckpointError(
        f"model {name} needs {files} from https://huggingface.co/{repo}; "
        f"{'it is' if len(missing) == 1 else 'they are'} not in the Hugging Face cache ({cache}) and {why}. "
        f"Either run again online (downloaded once into the cache), or on a machine with internet run "
        f"`hf download {repo} {' '.join(missing)}` and copy {cache}/models--{repo.replace('/', '--')} "
        f"into this machine's {cache} (HF_HUB_CACHE), or download "
        + ", ".join(file_url(f, repo) for f in missing)
        + " and pass the files' paths (--var/--vae, or var_fast.load(var_path, vae_path)). "
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


def fetch_files(name: str, repo: str, wanted) -> Tuple[str, ...]:
    """Local paths of ``wanted`` files of a Hugging Face repository (downloaded once into its cache)."""
    try:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as err:
        raise RuntimeError(f"var_fast.load({name!r}) needs huggingface_hub (pip install huggingface_hub), or "
                           f"download {' and '.join(file_url(f, repo) for f in wanted)} and pass their paths") from err
    # one brief attempt to reach the Hub, before any download or update check (each would retry or wait)
    offline = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else _unreachable(wanted[0], repo)
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
        raise _not_available(name, missing, constants.HF_HUB_CACHE, offline or "it could not be downloaded", repo)
    return tuple(paths)
