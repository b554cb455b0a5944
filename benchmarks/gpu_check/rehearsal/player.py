"""Plays a recorded output as if the GPU-only tool had printed it (see recorded/README.md).

    python -m benchmarks.gpu_check.rehearsal.player play FILE [--copy SRC DST]
    python -m benchmarks.gpu_check.rehearsal.player sanitizer --variant V --tool T [tool options] PROGRAM...
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from typing import List, Optional, Tuple

from . import VARIANTS, recorded

DRIVER = "@driver"


def read(path: str) -> Tuple[List[str], int]:
    """(lines to play, exit code) of a recorded file: '#' lines are provenance, '#! exit N' the exit code."""
    lines, code = [], 0
    with open(path) as f:
        for line in f.read().splitlines():
            if line.startswith("#! exit"):
                code = int(line.split()[-1])
            elif not line.startswith("#"):
                lines.append(line)
    return lines, code


def text(path: str, driver_output: str) -> str:
    """The recorded output with the driver's own output where the file says ``@driver``."""
    lines, _ = read(path)
    return "".join(driver_output if line == DRIVER else line + "\n" for line in lines)


def split_tool_command(args: List[str]) -> Tuple[str, List[str]]:
    """(tool, program) of compute-sanitizer's command line: options are '--name value' pairs before the program."""
    tool, i = "memcheck", 0
    while i < len(args) and args[i].startswith("--"):
        if args[i] == "--tool":
            tool = args[i + 1]
        i += 2
    return tool, args[i:]


def on_cpu(program: List[str]) -> List[str]:
    """The driver's command line with ``--device cuda`` turned into ``--device cpu``."""
    out = list(program)
    for i in range(len(out) - 1):
        if out[i] == "--device":
            out[i + 1] = "cpu"
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    play = sub.add_parser("play")
    play.add_argument("file")
    play.add_argument("--copy", nargs=2, metavar=("SRC", "DST"), help="a file the tool would have written")
    san = sub.add_parser("sanitizer")
    san.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    args, rest = p.parse_known_args(argv)
    if args.what == "play":
        lines, code = read(args.file)
        if args.copy:
            shutil.copyfile(*args.copy)
        sys.stdout.write("".join(line + "\n" for line in lines))
        return code
    tool, program = split_tool_command(rest)
    path = recorded(VARIANTS[args.variant][tool])
    lines, code = read(path)
    driver = ""
    if DRIVER in lines:  # the driver really runs (on the CPU); only the sanitizer's lines are recorded
        done = subprocess.run(on_cpu(program), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        driver = done.stdout
        if done.returncode:  # a driver that fails on the CPU fails the rehearsal, as it would under the tool
            driver += "========= Target application returned an error\n"
            code = code or done.returncode
    sys.stdout.write(text(path, driver))
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
