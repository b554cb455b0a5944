"""Prompt files: one prompt per line, UTF-8; no blank lines (a blank line is more likely a mistake than a
prompt, and it would shift every later prompt's index, which names its images)."""
from __future__ import annotations

import hashlib
import os
from typing import List


def read_prompts(path: str, flag: str = "--prompts") -> List[str]:
    """The prompts of ``path`` in order (line i is prompt i, 0-based). A missing or empty file, a blank
    line or text that is not UTF-8 is a ValueError naming the file and the line."""
    if not os.path.isfile(path):
        raise ValueError(f"{flag} {path}: no such file" + (" (it is a folder)" if os.path.isdir(path) else ""))
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{flag} {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark some editors write
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it is not a blank line
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not lines:
        raise ValueError(f"{flag} {path} is empty: write one prompt per line")
    blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if blank:
        shown = ", ".join(map(str, blank[:5])) + (" ..." if len(blank) > 5 else "")
        raise ValueError(f"{flag} {path}: line{'s' if len(blank) > 1 else ''} {shown} "
                         f"{'are' if len(blank) > 1 else 'is'} blank; write one prompt per line, without blank "
                         f"lines (a prompt's line number names its images)")
    return lines


def prompts_fingerprint(prompts: List[str]) -> str:
    """``<count>:<sha256 of the prompts joined by newlines>``: what a resumed run's prompts must match."""
    return f"{len(prompts)}:{hashlib.sha256(chr(10).join(prompts).encode('utf-8')).hexdigest()}"
