"""Files of a sample-fid run directory: one PNG per image index, written atomically; the run manifest
that keeps a resumed run from mixing settings; the .npz the standard ImageNet FID evaluator reads."""
from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Deque, Optional, Set

import numpy as np

MANIFEST = "sample-fid.json"
_IMAGE_NAME = re.compile(r"^(\d{6,})\.png$")
_TEMP_NAME = re.compile(r"^\.tmp-\d+-\d+\.png$")


def image_path(out: str, index: int) -> str:
    return os.path.join(out, f"{index:06d}.png")


def finished_images(out: str, total: int) -> Set[int]:
    """Indices below ``total`` whose PNG exists (temporary files never count: they are renamed when done)."""
    found = set()
    for entry in os.scandir(out):
        m = _IMAGE_NAME.match(entry.name)
        if m and int(m.group(1)) < total:
            found.add(int(m.group(1)))
    return found


def remove_stale_temps(out: str) -> int:
    """Delete the temporary files an interrupted run left behind; how many there were."""
    names = [e.name for e in os.scandir(out) if _TEMP_NAME.match(e.name)]
    for name in names:
        os.remove(os.path.join(out, name))
    return len(names)


def write_png(pixels: np.ndarray, out: str, index: int) -> None:
    """(H, W, 3) uint8 -> ``out/{index:06d}.png`` through a temporary name and a rename, so the final
    name only ever holds a complete file. Fixed encoder settings and no metadata: equal pixels give
    equal bytes."""
    from PIL import Image
    tmp = os.path.join(out, f".tmp-{index}-{os.getpid()}.png")
    Image.fromarray(pixels).save(tmp, format="PNG", compress_level=6, optimize=False)
    os.replace(tmp, image_path(out, index))


class PngWriter:
    """Encodes and writes PNGs on worker threads (zlib releases the GIL) while the next batch samples.
    At most ``max_pending`` writes are in flight; a failed write raises on the next submit or on close."""

    def __init__(self, out: str, threads: Optional[int] = None, max_pending: int = 256):
        self.out = out
        self.pool = ThreadPoolExecutor(max_workers=threads or min(4, os.cpu_count() or 1))
        self.pending: Deque[Future] = deque()
        self.max_pending = max_pending

    def submit(self, pixels: np.ndarray, index: int) -> None:
        while len(self.pending) >= self.max_pending:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(write_png, pixels, self.out, index))

    def close(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True)

    def __enter__(self) -> "PngWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- manifest --------------------------------------------------------------------------------------
def checkpoint_fingerprint(path: str, chunk: int = 1 << 20) -> str:
    """``<bytes>:<sha256 of the first and last MiB>``. Hashing all of a multi-GB checkpoint on every
    rank at every start would cost seconds to minutes; the ends suffice: a torch.save .pth is a zip
    whose central directory at the end holds the CRC-32 of every tensor record, and a .safetensors file
    starts with its header (names, shapes, offsets); a retrained or different model changes both."""
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return f"{size}:{h.hexdigest()}"


def path_fingerprint(path: str) -> str:
    """``checkpoint_fingerprint`` of a file; of a folder (safetensors shards, a Hugging Face model folder):
    one over its files' names and fingerprints."""
    if not os.path.isdir(path):
        return checkpoint_fingerprint(path)
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            h.update(f"{name}={checkpoint_fingerprint(full)};".encode())
    return f"folder:{h.hexdigest()}"


class RunMismatchError(ValueError):
    """The run directory holds images made with other settings."""


def _describe(key: str, value) -> str:
    if key == "prompts":
        return f"prompts {value}"
    return f"{value!r}" if key not in ("var", "vae", "transformer", "text_encoder") else f"checkpoint fingerprint {value}"


def check_or_write_manifest(out: str, manifest: dict, total: int) -> None:
    """Record ``manifest`` in a new run directory, or check that an existing one was started with the same
    ``manifest["settings"]`` (the values that decide the pixels). Raises RunMismatchError otherwise."""
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        done = finished_images(out, total)
        if done:
            raise RunMismatchError(f"{out} already holds {len(done)} images named like sample-fid output but no "
                                   f"{MANIFEST}: it was not written by this command (or the manifest was deleted), "
                                   f"so its images cannot be trusted to match; pass an empty or new --out")
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=2)
        os.replace(tmp, path)
        return
    with open(path) as f:
        recorded = json.load(f)
    old, new = recorded.get("settings", {}), manifest["settings"]
    diffs = [f"  {key}: {_describe(key, old.get(key))} recorded, {_describe(key, new.get(key))} now"
             for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    if diffs:
        raise RunMismatchError(f"{out} holds a sample-fid run started with other settings; images of different "
                               f"settings must not be mixed:\n" + "\n".join(diffs) +
                               f"\nResume it with the settings recorded in {path}, or pass another --out.")


# ---- npz -------------------------------------------------------------------------------------------
def npz_path(out: str) -> str:
    return os.path.normpath(out) + ".npz"


def pack_npz(out: str, total: int, dest: str, on_image: Optional[Callable[[], None]] = None) -> tuple:
    """All images into ``dest`` as ``arr_0`` (N, H, W, 3) uint8, what ``np.savez`` writes and the ImageNet
    FID evaluator (guided-diffusion's evaluator.py) reads, streamed one image at a time so that 50,000
    images never sit in memory. Returns the array's shape."""
    from PIL import Image
    tmp = f"{dest}.tmp-{os.getpid()}"
    shape = None
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("arr_0.npy", "w", force_zip64=True) as f:
                for i in range(total):
                    with Image.open(image_path(out, i)) as im:
                        pixels = np.asarray(im.convert("RGB"), dtype=np.uint8)
                    if shape is None:
                        shape = (total,) + pixels.shape
                        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(pixels.dtype),
                                                                 "fortran_order": False, "shape": shape})
                    elif pixels.shape != shape[1:]:
                        raise ValueError(f"{image_path(out, i)} is {pixels.shape}, the first image {shape[1:]}")
                    f.write(np.ascontiguousarray(pixels).tobytes())
                    if on_image is not None:
                        on_image()
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return shape
