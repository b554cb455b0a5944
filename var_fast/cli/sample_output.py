"""The output folder of ``var-fast sample``: file names, settings.json, and an earlier run's files.

settings.json is written before the first image, listing every file the run will write, and again at the
end (``"complete": true``). Run again into the same folder, ``sample`` removes exactly the files the
earlier run listed (and its settings.json) before it writes anything, and leaves every other file alone;
a folder whose settings.json is not one of var-fast sample's, or which has files of the names this run
would write that no earlier run listed, is refused.
"""
from __future__ import annotations

import json
import os
import re
from typing import List, Optional, Sequence

SETTINGS = "settings.json"
GRID = "grid.png"


def image_name(label: int, n: int, class_names) -> str:
    """``0007_000.png``, or with class names (the bundled model) ``0000_disk_000.png``."""
    tag = f"{label:04d}" + (f"_{class_names[label]}" if class_names and label < len(class_names) else "")
    return f"{tag}_{n:03d}.png"


def run_files(classes: Sequence[int], per_class: int, class_names) -> List[str]:
    """Every file a run writes besides settings.json, in the order written (the grid last)."""
    return [image_name(c, n, class_names) for c in classes for n in range(per_class)] + [GRID]


def _read_settings(out: str) -> Optional[dict]:
    path = os.path.join(out, SETTINGS)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            settings = json.load(f)
    except (OSError, ValueError):
        settings = None
    if not isinstance(settings, dict) or not {"classes", "per_class"} <= settings.keys():
        raise ValueError(f"--out {out} has a {SETTINGS} that var-fast sample did not write; choose another folder "
                         f"(var-fast sample replaces only the files of its own earlier runs)")
    return settings


def _earlier_files(out: str, settings: dict) -> List[str]:
    """The files an earlier run wrote: the list in its settings.json, or (a settings.json written before the
    list was added) the images of its classes and per-class count, and the grid."""
    listed = settings.get("files")
    if isinstance(listed, list):
        names = [n for n in listed if isinstance(n, str)]
    else:
        classes, per_class = settings.get("classes", []), settings.get("per_class", 0)
        pattern = re.compile(r"(\d{4})(?:_[^/\\]*)?_(\d{3})\.png")
        wanted = {(c, n) for c in classes if isinstance(c, int) for n in range(int(per_class or 0))}
        names = [GRID] + [n for n in sorted(os.listdir(out))
                          if (m := pattern.fullmatch(n)) and (int(m.group(1)), int(m.group(2))) in wanted]
    # plain names in this folder only: a hand-edited list cannot reach elsewhere
    return [n for n in names if n == os.path.basename(n) and n not in ("", ".", "..", SETTINGS)]


def check_earlier_run(out: str) -> None:
    """Before the model loads: --out is new, or its settings.json (if any) is one of var-fast sample's."""
    if os.path.isdir(out):
        _read_settings(out)


def clear_earlier_run(out: str, files: Sequence[str]) -> List[str]:
    """Remove the files of an earlier run in ``out`` (listed in its settings.json), before a run that writes
    ``files``; refuse when one of ``files`` is there and no earlier run wrote it. Returns what was removed."""
    if not os.path.isdir(out):
        return []
    settings = _read_settings(out)
    earlier = _earlier_files(out, settings) if settings is not None else []
    foreign = sorted((set(files) - set(earlier)) & set(os.listdir(out)))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ValueError(f"--out {out} already has {shown}, which no earlier var-fast sample run there wrote "
                         f"(it is not in a {SETTINGS}); choose another folder or move them")
    removed = []
    for name in earlier + ([SETTINGS] if settings is not None else []):
        path = os.path.join(out, name)
        if os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    return removed


def write_settings(out: str, settings: dict) -> None:
    """settings.json, replaced atomically (a killed run leaves the old or the new one, whole)."""
    path = os.path.join(out, SETTINGS)
    with open(path + ".tmp", "w") as f:
        json.dump(settings, f, indent=2)
    os.replace(path + ".tmp", path)
