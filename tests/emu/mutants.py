"""Mutation testing of the CUDA kernels, through the CUDA emulator (`make mutants`; docs/mutation-testing.md).

Plants one small fault at a time (a mutant) in a kernel family's headers (var_fast/<family>.cuh and its
launch plan var_fast/<family>_launch.h), rebuilds the emulated library incrementally (ninja recompiles
only the translation units that include the mutated header) and runs the family's emulated tests
against it. A mutant the tests fail on (or crash on) is killed; one they do not kill gets the check of
`make emu-sanitize` (TSan and ASan+UBSan builds, three thread orders), which kills it if it reports; one
that passes both survived (a test run that only times out is `timeout`, left out of the rate).
Every survivor needs a test that kills it, or a line in tests/emu/equivalent_mutants.txt saying why it
cannot change a result. A mutant that does not compile is stillborn: reported, not counted.

    python tests/emu/mutants.py                  # the sampled set (20 per family), report in build/mutants
    python tests/emu/mutants.py --smoke          # 2 per family, fails unless both are killed (CI)
    python tests/emu/mutants.py --list           # the sampled mutants, without running them
    python tests/emu/mutants.py --only ID ...    # these mutants (ids from the report or --list)

The mutants run in a copy of csrc/ and tests/ under build/mutants/tree (the working tree is never
touched), whose emulated build lives in build/mutants/tree/build/emu.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EQUIVALENT_LIST = os.path.join(ROOT, "tests", "emu", "equivalent_mutants.txt")
INCLUDE = "csrc/include/var_fast"

# Each family: the headers mutated, and the test files whose emulated cases judge a mutant.
FAMILIES = {
    "sampling": ([f"{INCLUDE}/sampling.cuh", f"{INCLUDE}/sampling_launch.h"],
                 ["tests/test_sampling.py", "tests/test_sampling_edges.py"]),
    "quant": ([f"{INCLUDE}/quant.cuh", f"{INCLUDE}/quant_launch.h"],
              ["tests/test_quant.py", "tests/test_quant_edges.py"]),
    "attention": ([f"{INCLUDE}/attention.cuh", f"{INCLUDE}/attention_launch.h"],
                  ["tests/test_attention.py", "tests/test_attention_edges.py"]),
    "adaln": ([f"{INCLUDE}/adaln.cuh", f"{INCLUDE}/adaln_launch.h"],
              ["tests/test_adaln_modulate.py", "tests/test_gated_residual.py", "tests/test_adaln_edges.py"]),
    "bitwise_sampling": ([f"{INCLUDE}/bitwise_sampling.cuh", f"{INCLUDE}/bitwise_sampling_launch.h"],
                         ["tests/test_bitwise_sampling.py"]),
    "bsq": ([f"{INCLUDE}/bsq.cuh", f"{INCLUDE}/bsq_launch.h", f"{INCLUDE}/bsq_interp.h"],
            ["tests/test_bsq_scale_update.py"]),
}


# The cases of the sanitizer driver (tests/emu/sanitize/quick_cases.cpp, `make emu-sanitize`) that call each
# family's kernels: substrings of their names.
SANITIZER_CASES = {
    "sampling": ["sample_"],
    "quant": ["nearest", "area", "bicubic", "phi", "sampler_step", "encode"],
    "attention": ["attention", "qkv"],
    "adaln": ["adaln", "gated"],
    "bitwise_sampling": ["bits_"],
    "bsq": ["bsq_"],
}


# CI's --smoke set: mutants of device code (one kernel TU to rebuild) that a test should fail on early;
# the first four were killed in full runs. An id that no longer matches (its line was edited) is replaced
# by the next sampled mutant of its family.
SMOKE_IDS = {"sampling-9c7951a2", "quant-4da382fc", "adaln-5cb698da", "adaln-3d93f869",
             "sampling-ebbeadd4", "quant-7763df5d", "attention-8670ee29", "attention-cfa1af7a",
             "bitwise_sampling-aab22e58", "bitwise_sampling-df971e94"}


# ---- the mutation operators --------------------------------------------------------------------------

def code_view(text: str) -> str:
    """`text` with comments, string/char literals and preprocessor lines blanked (same length, same
    newlines), so the operators only ever match code."""
    out = list(text)
    i, n = 0, len(text)

    def blank(a: int, b: int) -> None:
        for j in range(a, b):
            if out[j] != "\n":
                out[j] = " "

    line_start = True
    while i < n:
        c = text[i]
        if line_start and c in " \t":
            i += 1
            continue
        if line_start and c == "#":  # a preprocessor line (with its continuations)
            j = i
            while j < n and not (text[j] == "\n" and text[j - 1] != "\\"):
                j += 1
            blank(i, j)
            i = j
            continue
        line_start = c == "\n"
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            blank(i, j)
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            blank(i, j + 1)
            i = j + 1
        else:
            i += 1
    return _blank_host_branches("".join(out), text)


def _blank_host_branches(view: str, text: str) -> str:
    """Blanks the `#else` part of `#if defined(__CUDA_ARCH__)`: host-compiler code (the CPU ops' build),
    never part of a kernel."""
    lines, view_lines, state = text.split("\n"), view.split("\n"), None
    for n, line in enumerate(lines):
        directive = line.strip()
        if directive == "#if defined(__CUDA_ARCH__)":
            state = "device"
        elif state == "device" and directive.startswith("#else"):
            state = "host"
        elif state and directive.startswith("#endif"):
            state = None
        elif state == "host":
            view_lines[n] = " " * len(line)
    return "\n".join(view_lines)


NOT_SWAPPABLE = {"static_cast", "reinterpret_cast", "const", "int", "int64_t", "uint32_t", "unsigned", "size_t",
                 "float", "sizeof", "true", "false"}

# (operator, pattern on the code view, replacements of the matched text). A replacement is a string
# or a function of the match returning the mutated text (None: no mutant).
RELATIONAL = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}
ARITHMETIC = {"+": "-", "-": "+", "*": "/", "/": "*", "%": "/"}
COMPOUND = {"+=": "-=", "-=": "+=", "*=": "/=", "/=": "*="}
DIMS = {"x": "y", "y": "x", "z": "x"}


def _swap_subscript(m: re.Match) -> str | None:
    """Swaps the first two distinct plain identifiers (not members, calls or types) of a subscript."""
    body = m.group(1)
    names = [t for t in re.finditer(r"(?<![\w.>])([A-Za-z_]\w*)(?!\w|\s*\(|\s*<|\.|->)", body)
             if t.group(1) not in NOT_SWAPPABLE]
    # two operands of different terms, one of them scaled (`r * LD + d` -> `d * LD + r`); swapping the
    # operands of one commutative operator would be equivalent by construction
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
             if a.group(1) != b.group(1) and re.search(r"[-+]", body[a.end():b.start()])
             and re.search(r"[*/]", body)]
    if not pairs:
        return None
    a, b = pairs[0]
    s = body[:a.start()] + b.group(1) + body[a.end():b.start()] + a.group(1) + body[b.end():]
    return "[" + s + "]"


OPERATORS = [
    ("relational", r"(?<=\s)(<=|>=|==|!=|<|>)(?=\s)", lambda m: RELATIONAL[m.group(1)]),
    ("logical", r"(?<=\s)(&&|\|\|)(?=\s)", lambda m: "||" if m.group(1) == "&&" else "&&"),
    ("arithmetic", r"(?<=\s)([-+*/%])(?=\s)", lambda m: ARITHMETIC[m.group(1)]),
    ("compound", r"(?<=\s)(\+=|-=|\*=|/=)(?=\s)", lambda m: COMPOUND[m.group(1)]),
    ("off_by_one+", r"(?<![\w.])(\d+)([uUlL]*)(?![\w.])", lambda m: f"{int(m.group(1)) + 1}{m.group(2)}"),
    ("off_by_one-", r"(?<![\w.])(\d+)([uUlL]*)(?![\w.])",
     lambda m: f"{int(m.group(1)) - 1}{m.group(2)}" if int(m.group(1)) > 0 else None),
    ("barrier", r"\b(__syncthreads\(\)|__syncwarp\([^()]*\))\s*;", lambda m: ";"),
    ("swap_dim", r"\b(threadIdx|blockIdx|blockDim|gridDim)\.([xyz])\b",
     lambda m: f"{m.group(1)}.{DIMS[m.group(2)]}"),
    ("swap_index", r"\[([^\[\]\n]+)\]", _swap_subscript),
    ("min_max", r"\b(min|max|fminf|fmaxf)(?=\()",
     lambda m: {"min": "max", "max": "min", "fminf": "fmaxf", "fmaxf": "fminf"}[m.group(1)]),
]


@dataclasses.dataclass
class Mutant:
    id: str
    family: str
    path: str      # relative to the repository root
    line: int
    op: str
    start: int     # character offsets of the replaced text in the file
    end: int
    original: str
    replacement: str
    source_line: str

    def describe(self) -> str:
        return f"{self.path}:{self.line} [{self.op}] {self.original!r} -> {self.replacement!r}"

    def apply(self, text: str) -> str:
        return text[:self.start] + self.replacement + text[self.end:]


def generate(family: str, rel_path: str, text: str) -> list[Mutant]:
    """Every mutant of one file. Ids hash the mutated line's text, its occurrence number among equal
    lines, the column and the replacement: they survive edits elsewhere in the file."""
    view = code_view(text)
    line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    lines = text.split("\n")
    mutants = []
    for op, pattern, replace in OPERATORS:
        for m in re.finditer(pattern, view):
            repl = replace(m)
            if repl is None or repl == m.group(0):
                continue
            line = _line_of(line_starts, m.start())
            line_text = lines[line - 1]
            occurrence = [x.strip() for x in lines[:line - 1]].count(line_text.strip())
            col = m.start() - line_starts[line - 1]
            key = f"{rel_path}|{line_text.strip()}|{occurrence}|{col - (len(line_text) - len(line_text.lstrip()))}|{op}|{repl}"
            mid = f"{family}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
            mutants.append(Mutant(mid, family, rel_path, line, op, m.start(), m.end(), m.group(0), repl,
                                  line_text.strip()))
    return mutants


def _line_of(line_starts: list[int], offset: int) -> int:
    lo, hi = 0, len(line_starts)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if line_starts[mid] <= offset:
            lo = mid
        else:
            hi = mid
    return lo + 1


def sample(mutants: list[Mutant], count: int, seed: int) -> list[Mutant]:
    """`count` mutants, deterministic for a seed: shuffled per operator, then taken round-robin over the
    operators, so rare operators (barriers, swapped dimensions) are always represented."""
    rng = random.Random(seed)
    by_op: dict[str, list[Mutant]] = {}
    for m in sorted(mutants, key=lambda m: (m.path, m.start, m.op, m.replacement)):
        by_op.setdefault(m.op, []).append(m)
    pools = []
    for op in sorted(by_op):
        pool = by_op[op]
        rng.shuffle(pool)
        pools.append(pool)
    rng.shuffle(pools)
    chosen = []
    while len(chosen) < count and any(pools):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(pool.pop())
    return chosen


def load_equivalents(path: str = EQUIVALENT_LIST) -> dict[str, str]:
    """id -> why it cannot change a result. Format: `<id> <description> # <reason>`, one per line."""
    equivalents = {}
    if not os.path.exists(path):
        return equivalents
    for number, raw in enumerate(open(path), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, sep, reason = line.partition(" # ")
        if not sep or not reason.strip():
            raise SystemExit(f"{path}:{number}: an equivalent mutant needs a reason after ' # '")
        equivalents[head.split()[0]] = reason.strip()
    return equivalents


# ---- running ----------------------------------------------------------------------------------------

class MutantBuild:
    """Builds the emulated library with one mutated header, reusing the objects of the unmutated build
    (build/emu, made up to date first): the mutated header lives in a copy of csrc/include that comes
    first on the include path, only the translation units whose preprocessed text the mutant changes are
    recompiled (with build/emu's own command line), and the library is linked in build/mutants."""

    def __init__(self, out_dir: str):
        self.emu_dir = os.path.join(ROOT, "build", "emu")
        self.include = os.path.join(out_dir, "include")
        self.obj_dir = os.path.join(out_dir, "obj")
        self.library = os.path.join(out_dir, "lib", "var_fast_emu.so")
        self.out_dir = out_dir
        self._pristine_text: dict[str, str] = {}
        self.recompiled: dict[str, str] = {}  # object -> its mutated build, of the last build()

    def prepare(self, timeout: float) -> None:
        """The unmutated build (incremental), its commands and dependencies, the include copy."""
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "emu", "build.py")], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            print(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit("the unmutated emulated build failed")
        ninja = open(os.path.join(self.emu_dir, "build.ninja")).read()
        var = dict(re.findall(r"^(\w+) = (.*)$", ninja, re.M))
        self.cxx, self.cflags, self.post = var["cxx"], var["cflags"].split(), var.get("post_cflags", "").split()
        self.ldflags = var["ldflags"].split()
        self.sources = dict(re.findall(r"^build (\S+\.o): compile (\S+)$", ninja, re.M))
        self.objects = re.search(r"^build \S+\.so: link (.*)$", ninja, re.M).group(1).split()
        deps = subprocess.run(["ninja", "-C", self.emu_dir, "-t", "deps"], capture_output=True, text=True,
                              check=True).stdout
        self.deps: dict[str, set[str]] = {}
        for block in deps.split("\n\n"):
            lines = block.strip().split("\n")
            if lines and lines[0].endswith(")") and ": #deps" in lines[0]:
                self.deps[lines[0].split(":")[0]] = {os.path.realpath(x.strip()) for x in lines[1:]}
        shutil.rmtree(self.include, ignore_errors=True)
        shutil.copytree(os.path.join(ROOT, "csrc", "include"), self.include)
        for d in (self.obj_dir, os.path.dirname(self.library)):
            os.makedirs(d, exist_ok=True)

    def worker(self, out_dir: str) -> "MutantBuild":
        """A builder for one parallel worker: the same unmutated build, its own include copy, objects
        and library under out_dir."""
        other = MutantBuild(out_dir)
        for name in ("cxx", "cflags", "post", "ldflags", "sources", "objects", "deps"):
            setattr(other, name, getattr(self, name))
        other._pristine_text = self._pristine_text  # read-mostly cache, same keys in every worker
        shutil.rmtree(other.include, ignore_errors=True)
        shutil.copytree(self.include, other.include)
        for d in (other.obj_dir, os.path.dirname(other.library)):
            os.makedirs(d, exist_ok=True)
        return other

    def _command(self, obj: str, *, mutated: bool) -> list[str]:
        include = ["-I" + self.include] if mutated else []
        return [self.cxx, *include, *self.cflags, "-c", self.sources[obj], *self.post]

    def _preprocessed(self, obj: str, mutated: bool, timeout: float) -> str:
        cmd = self._command(obj, mutated=mutated) + ["-E", "-P", "-o", "-"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout

    def build(self, rel_path: str, text: str, timeout: float) -> tuple[bool, str]:
        """Links the library with `text` as the header `rel_path`; (compiled, log tail)."""
        inc_rel = os.path.relpath(os.path.join(ROOT, rel_path), os.path.join(ROOT, "csrc", "include"))
        target = os.path.join(self.include, inc_rel)
        original = open(target).read()
        header = os.path.realpath(os.path.join(ROOT, rel_path))
        try:
            with open(target, "w") as f:
                f.write(text)
            objects, log = [], ""
            self.recompiled = {}
            for obj in self.objects:
                if obj in self.sources and header in self.deps.get(obj, ()):
                    key = (obj, rel_path)
                    if key not in self._pristine_text:
                        self._pristine_text[key] = self._preprocessed(obj, False, timeout)
                    try:
                        changed = self._preprocessed(obj, True, timeout) != self._pristine_text[key]
                    except subprocess.CalledProcessError as err:
                        return False, err.stderr[-3000:]
                    if changed:
                        out = os.path.join(self.obj_dir, obj)
                        proc = subprocess.run(self._command(obj, mutated=True) + ["-o", out], capture_output=True,
                                              text=True, timeout=timeout)
                        if proc.returncode != 0:
                            return False, proc.stderr[-3000:]
                        objects.append(out)
                        self.recompiled[obj] = out
                        log += f"recompiled {obj}\n"
                        continue
                objects.append(os.path.join(self.emu_dir, obj))
            if not log:
                return False, "the mutant changes no translation unit's preprocessed text"
            proc = subprocess.run([self.cxx, *objects, *self.ldflags, "-o", self.library], capture_output=True,
                                  text=True, timeout=timeout)
            return proc.returncode == 0, log + proc.stderr[-3000:]
        except subprocess.TimeoutExpired:
            return False, "build timed out"
        finally:
            with open(target, "w") as f:
                f.write(original)

    def sanitizer_check(self, family: str, rel_path: str, text: str, timeout: float,
                        build_timeout: float = 1800.0) -> dict:
        """The check of `make emu-sanitize` on the mutant of the last build() (one its tests did not kill): the
        family's cases of the sanitizer driver, linked with the mutated kernel translation units compiled
        under ThreadSanitizer and under AddressSanitizer+UBSan (and the mutated plain launchers), each run
        in the three thread orders. As `make emu-sanitize` fails, the mutant is killed when a run reports
        (a race between barriers, an out-of-bounds access, undefined behaviour, an emulator error or a
        failed check) or when the results differ between orders or builds."""
        san = _sanitizer_builds(family, timeout)
        inc_rel = os.path.relpath(os.path.join(ROOT, rel_path), os.path.join(ROOT, "csrc", "include"))
        target = os.path.join(self.include, inc_rel)
        original = open(target).read()
        includes = san.include_flags(san.emu_build.cuda_include_dir())
        at = includes.index(os.path.join(ROOT, "csrc", "include"))
        includes = includes[:at] + [self.include, "-I"] + includes[at:]  # the mutated header first
        shim_flags = [f for f in san.emu_build.EMU_FLAGS if not f.startswith("-O")]
        runs, logs = {}, []
        try:
            with open(target, "w") as f:
                f.write(text)
            for mode in SANITIZER_MODES:
                out_dir = os.path.join(self.out_dir, f"san-{mode}")
                os.makedirs(out_dir, exist_ok=True)
                objects = []
                for obj in self.objects:
                    if obj.startswith("launcher_") or obj == "emu_library.o":  # plain, as make emu-sanitize
                        objects.append(self.recompiled.get(obj, os.path.join(self.emu_dir, obj)))
                    elif obj in self.recompiled:
                        out = os.path.join(out_dir, obj)
                        cmd = ["g++", *shim_flags, *san.MODES[mode].cflags, *includes, "-c", self.sources[obj], "-o", out]
                        subprocess.run(cmd, capture_output=True, text=True, timeout=build_timeout, check=True)
                        objects.append(out)
                    else:
                        objects.append(os.path.join(ROOT, "build", f"emu-{mode}", obj))
                exe = os.path.join(out_dir, "quick_cases")
                driver = os.path.join(ROOT, "build", "emu-sanitize", "quick_cases.o")
                tlib = os.path.join(san.torch_dir(), "lib")
                subprocess.run(["g++", *san.MODES[mode].cflags, *objects, driver, "-o", exe, f"-L{tlib}",
                                f"-Wl,-rpath,{tlib}", "-Wl,--no-as-needed", "-ltorch_cpu", "-lc10"],
                               capture_output=True, text=True, timeout=build_timeout, check=True)
                for order in san.THREAD_ORDERS:
                    ok, sums, tail = _run_sanitizer_cases(san, exe, mode, order, family, timeout)
                    runs[(mode, order)] = sums
                    if ok is None:
                        return {"outcome": "timeout", "how": "sanitizer", "tail": tail}
                    if not ok:
                        return {"outcome": "killed", "how": "sanitizer", "tail": f"{mode} {order}: {tail}"}
                    logs.append(f"{mode} {order}: {len(sums)} cases passed")
        except subprocess.CalledProcessError as err:
            raise SystemExit(f"building the sanitized mutant failed:\n{err.stderr[-3000:]}")
        finally:
            with open(target, "w") as f:
                f.write(original)
        differ = san.differing_cases(runs)
        if differ:
            return {"outcome": "killed", "how": "sanitizer", "tail": "results differ between thread orders / builds: "
                    + "; ".join(differ)}
        return {"outcome": "survived", "how": "passed", "sanitizer": "; ".join(logs)}

    def link_unmutated(self, timeout: float) -> None:
        """The unmutated library at the mutants' path: the baseline runs exactly what the mutants run."""
        objects = [os.path.join(self.emu_dir, o) for o in self.objects]
        subprocess.run([self.cxx, *objects, *self.ldflags, "-o", self.library], check=True, timeout=timeout)

    def test(self, family: str, timeout: float, extra: list[str]) -> tuple[str, float, str]:
        """Runs the family's emulated tests on the linked library: (outcome, seconds, output tail);
        outcome is passed, failed, crashed (killed by a signal) or timeout; a run pytest could not do (a usage
        or internal error, e.g. var_fast._C not loading) stops the tool."""
        files = [f for f in FAMILIES[family][1] if os.path.exists(os.path.join(ROOT, f))]
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "emu", "-p", "no:cacheprovider",
               "-p", "emu.mutant_library", *extra, *files]
        path = os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path, "VAR_FAST_REQUIRE_EXTENSION": "1",
               "VAR_FAST_MUTANT_LIBRARY": self.library}
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as err:
            out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            return "timeout", time.monotonic() - start, out[-2000:]
        seconds = time.monotonic() - start
        tail = (proc.stdout + proc.stderr)[-2000:]
        if proc.returncode in (2, 3, 4, 5):  # interrupted, internal or usage error, no tests: not the mutant's doing
            raise SystemExit(f"pytest could not run the {family} tests (exit {proc.returncode}):\n{tail}")
        outcome = {0: "passed", 1: "failed"}.get(proc.returncode, "crashed")  # else a signal
        return outcome, seconds, tail


# ---- the sanitizer check (make emu-sanitize) of the mutants the tests do not kill -----------------------

SANITIZER_MODES = ("tsan", "asan")
_sanitizer_lock = threading.Lock()
_sanitizer_state: dict = {}  # "module": tests/emu/sanitize.py, "exes": its executables, family: checked


def _sanitizer_builds(family: str, timeout: float):
    """tests/emu/sanitize.py, with its sanitized builds of the unmutated kernels up to date (once per run)
    and the family's cases passing on them (once per family): a failure there is the tool's, not a kill."""
    with _sanitizer_lock:
        if "module" not in _sanitizer_state:
            sys.path.insert(0, os.path.join(ROOT, "tests"))
            from emu import sanitize
            print("building the sanitized emulated kernels (make emu-sanitize's build) ...", flush=True)
            try:
                exes = sanitize.build_executables(list(SANITIZER_MODES))
            except RuntimeError as err:
                raise SystemExit(f"the unmutated sanitizer build failed: {err}")
            _sanitizer_state.update(module=sanitize, exes=exes)
        san = _sanitizer_state["module"]
        if family not in _sanitizer_state:
            for mode in SANITIZER_MODES:
                for order in san.THREAD_ORDERS:
                    ok, sums, tail = _run_sanitizer_cases(san, _sanitizer_state["exes"][mode], mode, order, family,
                                                          timeout)
                    if not ok or not sums:
                        raise SystemExit(f"the unmutated {family} sanitizer cases do not pass ({mode}, {order}):\n{tail}")
            _sanitizer_state[family] = True
        return san


def _run_sanitizer_cases(san, exe: str, mode: str, order: str, family: str,
                         timeout: float) -> tuple[bool | None, dict[str, str], str]:
    """(passed, case -> checksum, output tail) of the family's driver cases; passed is None on a timeout."""
    env = {**os.environ, **san.MODES[mode].env, "CUEMU_SCHED": order}
    try:
        done = subprocess.run([exe, ",".join(SANITIZER_CASES[family])], capture_output=True, text=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, {}, f"{mode} {order}: timed out after {timeout:.0f} s"
    sums = {m[1]: m[2] for m in map(san.CASE_LINE.match, done.stdout.splitlines()) if m}
    return done.returncode == 0, sums, (done.stdout + done.stderr)[-1500:]


def run(args: argparse.Namespace) -> int:
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    equivalents = load_equivalents()
    families = args.families or list(FAMILIES)
    per_family = 2 if args.smoke else args.per_family
    chosen: list[Mutant] = []
    all_ids = set()
    texts = {}
    for family in families:
        candidates = []
        for rel in FAMILIES[family][0]:
            texts[rel] = open(os.path.join(ROOT, rel)).read()
            candidates += generate(family, rel, texts[rel])
        all_ids |= {m.id for m in candidates}
        picked = sample(candidates, args.per_family, args.seed)
        if args.smoke:  # mutants seen killed in device code (one kernel TU each), then the sample's next ones
            preferred = [m for m in candidates if m.id in SMOKE_IDS]
            rest = [m for m in picked if m.id not in equivalents and m.id not in SMOKE_IDS]
            picked = (preferred + rest)[:per_family]
        chosen += picked
    stale = sorted(set(equivalents) - all_ids) if not args.families else []
    if args.only:
        wanted = set(args.only)
        everything = [m for f in families for rel in FAMILIES[f][0] for m in generate(f, rel, texts[rel])]
        chosen = [m for m in everything if m.id in wanted]
        missing = wanted - {m.id for m in chosen}
        if missing:
            raise SystemExit(f"no such mutant: {', '.join(sorted(missing))}")
    if args.list:
        for m in chosen:
            mark = "  (equivalent)" if m.id in equivalents else ""
            print(f"{m.id}  {m.describe()}{mark}\n    {m.source_line}")
        return 0

    if args.report_only:  # the sampled set's results as the journal has them (a cut-short run: not_run)
        journal = os.path.join(out_dir, "results.jsonl")
        last = {}
        for line in open(journal) if os.path.exists(journal) else ():
            r = json.loads(line)
            if r.get("how") == "timeout":  # journals of older runs counted every timeout as killed
                r.update(judge_outcome("timeout", r.get("tail", "")))
            last[r["id"]] = r
        results = []
        for m in chosen:
            if m.id in equivalents:
                r = {"outcome": "equivalent", "reason": equivalents[m.id]}
            else:
                r = last.get(m.id, {"outcome": "not_run"})
            r.update(dataclasses.asdict(m))
            results.append(r)
        summary = summarize(results, families, sum(r.get("seconds", 0.0) for r in results), args, stale, {})
        summary["seconds_are_summed"] = True
        write_report(out_dir, summary, results)
        print(summary_text(summary))
        return 0

    started = time.monotonic()
    builder = MutantBuild(out_dir)
    builder.prepare(args.build_timeout)
    builder.link_unmutated(args.build_timeout)
    # The unmutated library must pass (a full run; --smoke and --only trust `make test` for that and
    # use --min-timeout): its time sets each family's hang timeout.
    baseline = {}
    families_run = sorted({m.family for m in chosen}) if not (args.smoke or args.only or args.no_baseline) else []
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        runs = pool.map(lambda f: builder.test(f, args.build_timeout, args.pytest_args), families_run)
        for family, (outcome, seconds, tail) in zip(families_run, runs):
            if outcome != "passed":
                print(tail)
                raise SystemExit(f"the unmutated {family} tests do not pass ({outcome})")
            baseline[family] = seconds
            print(f"baseline {family}: {seconds:.0f} s: {tail.strip().splitlines()[-1]}", flush=True)

    # families interleaved (a cut-short run still covers each), each family's mutants in file order
    rank = {}
    for m in sorted(chosen, key=lambda m: (m.path, m.start)):
        rank[m.id] = sum(1 for other in rank if other.split("-")[0] == m.family)
    chosen.sort(key=lambda m: (rank[m.id], list(FAMILIES).index(m.family)))
    workers = queue.Queue()
    for n in range(max(1, args.jobs)):
        workers.put(builder.worker(os.path.join(out_dir, f"worker{n}")))
    done = [0]
    lock = threading.Lock()

    journal = os.path.join(out_dir, "smoke.jsonl" if args.smoke else "results.jsonl")
    previous = {}
    if args.resume and os.path.exists(journal):
        for line in open(journal):
            r = json.loads(line)
            if r.get("how") == "timeout":
                r.update(judge_outcome("timeout", r.get("tail", "")))
            if r["outcome"] in ("killed", "stillborn", "not_built"):
                previous[r["id"]] = r
    elif not args.only:
        open(journal, "w").close()

    def judge(m: Mutant) -> dict:
        t0 = time.monotonic()
        if m.id in previous and m.id not in equivalents:
            result = dict(previous[m.id], resumed=True)
            with lock:
                done[0] += 1
                print(f"[{done[0]}/{len(chosen)}] {m.id} {result['outcome']:<10} (earlier run)", flush=True)
            return result
        if m.id in equivalents and not args.only:
            result = {"outcome": "equivalent", "reason": equivalents[m.id]}
        else:
            worker = workers.get()
            try:
                built, log = worker.build(m.path, m.apply(texts[m.path]), args.build_timeout)
                if not built:
                    unchanged = "changes no translation unit" in log
                    result = {"outcome": "not_built" if unchanged else "stillborn", "log": log[-1500:]}
                else:
                    timeout = max(args.min_timeout, args.timeout_factor * baseline.get(m.family, 0.0))
                    outcome, seconds, tail = worker.test(m.family, timeout, args.pytest_args)
                    result = judge_outcome(outcome, tail)
                    result.update(test_seconds=round(seconds, 1), tail=tail[-800:])
                    if result["outcome"] in ("survived", "timeout") and args.sanitize:
                        # make emu-sanitize's check on what the tests did not kill; it kills or leaves as is
                        checked = worker.sanitizer_check(m.family, m.path, m.apply(texts[m.path]),
                                                         args.sanitizer_timeout, args.build_timeout)
                        if checked["outcome"] == "killed":
                            result.update(checked, tests_tail=tail[-800:])
                        else:
                            result["sanitizer"] = checked.get("sanitizer") or checked.get("tail", "")
                    if m.id in equivalents:
                        result["listed_equivalent"] = equivalents[m.id]
            finally:
                workers.put(worker)
        result.update(dataclasses.asdict(m), seconds=round(time.monotonic() - t0, 1))
        with lock:
            done[0] += 1
            with open(journal, "a") as f:
                f.write(json.dumps(result) + "\n")
            print(f"[{done[0]}/{len(chosen)}] {m.id} {result['outcome']:<10} {result.get('how', ''):<8} "
                  f"{result['seconds']:>5.0f} s  {m.describe()}", flush=True)
        return result

    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(judge, chosen))
    summary = summarize(results, families, time.monotonic() - started, args, stale, baseline)
    write_report(out_dir, summary, results)
    print(summary_text(summary))
    if args.only:
        return 0
    failing = [f for f, s in summary["families"].items() if s["rate"] is not None and s["rate"] < args.min_rate]
    if args.smoke and any(r["outcome"] in ("survived", "timeout") for r in results):
        return 1
    return 1 if failing or stale else 0


def judge_outcome(outcome: str, tail: str) -> dict:
    """passed: survived; failed or crashed: killed. A run past the timeout is killed only if pytest had
    already reported a failing test; otherwise it is `timeout` (a hang, or a survivor slowed down by a
    loaded machine), left out of the rate and listed, to rerun with --only and a longer --min-timeout."""
    if outcome == "timeout":
        if re.search(r"^FAILED |\b\d+ failed\b", tail, re.M):
            return {"outcome": "killed", "how": "failed"}
        return {"outcome": "timeout", "how": "timeout"}
    return {"outcome": "survived" if outcome == "passed" else "killed", "how": outcome}


def summarize(results: list[dict], families: list[str], seconds: float, args, stale: list[str],
              baseline: dict[str, float]) -> dict:
    per = {}
    for family in families:
        rs = [r for r in results if r["family"] == family]
        count = {k: sum(r["outcome"] == k for r in rs)
                 for k in ("killed", "survived", "timeout", "stillborn", "not_built", "equivalent", "not_run")}
        judged = count["killed"] + count["survived"]
        per[family] = {**count, "sampled": len(rs), "rate": count["killed"] / judged if judged else None,
                       "killed_by": {h: sum(r.get("how") == h for r in rs if r["outcome"] == "killed")
                                     for h in ("failed", "crashed", "sanitizer")}}
    killed = sum(s["killed"] for s in per.values())
    judged = killed + sum(s["survived"] for s in per.values())
    return {"families": per, "killed": killed, "judged": judged, "rate": killed / judged if judged else None,
            "seconds": round(seconds), "baseline_seconds": {f: round(t) for f, t in baseline.items()}, "seed": args.seed, "per_family": args.per_family, "smoke": args.smoke,
            "stale_equivalents": stale,
            "survivors": [f"{r['id']}  {Mutant(**{k: r[k] for k in Mutant.__dataclass_fields__}).describe()}"
                          for r in results if r["outcome"] == "survived"],
            "timeouts": [f"{r['id']}  {Mutant(**{k: r[k] for k in Mutant.__dataclass_fields__}).describe()}"
                         for r in results if r["outcome"] == "timeout"]}


def summary_text(s: dict) -> str:
    lines = ["| family | sampled | stillborn | not built | equivalent | killed | survived | timeout | not run | kill rate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for family, f in s["families"].items():
        rate = "-" if f["rate"] is None else f"{100 * f['rate']:.1f}%"
        lines.append(f"| {family} | {f['sampled']} | {f['stillborn']} | {f['not_built']} | {f['equivalent']} | "
                     f"{f['killed']} | "
                     f"{f['survived']} | {f['timeout']} | {f['not_run']} | {rate} |")
    rate = "-" if s["rate"] is None else f"{100 * s['rate']:.1f}%"
    not_run = sum(f["not_run"] for f in s["families"].values())
    if not_run:
        lines.append(f"\n{not_run} sampled mutants not run yet (a cut-short run; finish it with --resume).")
    took = "mutant-minutes (summed)" if s.get("seconds_are_summed") else "min"
    lines.append(f"\nKilled {s['killed']} of {s['judged']} non-equivalent, compiling mutants ({rate}) "
                 f"in {s['seconds'] / 60:.1f} {took}.")
    if s["survivors"]:
        lines += ["", "Survivors:"] + [f"- {x}" for x in s["survivors"]]
    if s.get("timeouts"):
        lines += ["", "Timed out with no failing test yet (rerun with --only and a longer --min-timeout):"]
        lines += [f"- {x}" for x in s["timeouts"]]
    if s["stale_equivalents"]:
        lines += ["", "Equivalent-mutant ids that no longer match a mutant (remove them):"]
        lines += [f"- {x}" for x in s["stale_equivalents"]]
    return "\n".join(lines)


def write_report(out_dir: str, summary: dict, results: list[dict]) -> None:
    name = "smoke" if summary["smoke"] else "report"
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump({"summary": summary, "mutants": results}, f, indent=1)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write("# Mutation testing of the kernels (tests/emu/mutants.py)\n\n" + summary_text(summary) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), help="default: all four")
    parser.add_argument("--per-family", type=int, default=20, help="sampled mutants per family (default 20)")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--smoke", action="store_true",
                        help="the first 2 sampled, non-equivalent mutants per family; fails if one survives")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutants (even if listed equivalent)")
    parser.add_argument("--list", action="store_true", help="print the sampled mutants and stop")
    parser.add_argument("--min-rate", type=float, default=0.95, help="fail below this kill rate per family")
    parser.add_argument("--timeout-factor", type=float, default=1.5,
                        help="a test run longer than this times the unmutated run is killed (a hang)")
    parser.add_argument("--min-timeout", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--build-timeout", type=float, default=1800.0)
    parser.add_argument("--resume", action="store_true",
                        help="take killed, stillborn and not-built mutants from the last run's results.jsonl; "
                             "rerun the rest (survivors: against the tests written since)")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report of the sampled set from results.jsonl without running anything; "
                             "the time is then the sum of the mutants' own times")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unmutated test run (make test runs it); hang timeout = --min-timeout")
    parser.add_argument("--no-sanitize", dest="sanitize", action="store_false",
                        help="do not run make emu-sanitize's check (TSan, ASan+UBSan, three thread orders) on the "
                             "mutants that pass their tests")
    parser.add_argument("--sanitizer-timeout", type=float, default=600.0,
                        help="seconds per run of the sanitizer driver (a run past it kills nothing)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants built and tested at once (default 1)")
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "mutants"))
    parser.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
