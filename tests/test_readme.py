"""README runs as written: every command and Python snippet it shows is run here (in a folder where README's
first command, `make sample`, has run), or is listed with the reason it cannot run here (a download, a GPU,
an install); a snippet that is neither fails. The edit commands are the ones the README picture shows.

`make sample ...` runs the Makefile's recipe for the target (with its ARGS), not the install step before it."""
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
from PIL import Image

import var_fast
from var_fast.cli import build_parser, main
from repo_scripts import load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(var_fast.__file__)))
README = open(os.path.join(REPO, "README.md")).read()
MAKEFILE = open(os.path.join(REPO, "Makefile")).read()


# ---- what README shows ------------------------------------------------------------------------------------
@dataclass
class Snippet:
    line: int          # README line of the command or of the block's first line
    lang: str          # bash or python
    text: str          # one shell command (continuations joined) or a whole Python block
    env: Dict[str, str] = field(default_factory=dict)
    argv: Optional[List[str]] = None  # the var-fast arguments a shell command comes down to

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def code_blocks():
    """(language, first line number, text) of every fenced block."""
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", README, flags=re.M | re.S):
        yield m.group(1), README.count("\n", 0, m.start()) + 2, m.group(2)


def make_recipe(target: str, variables: Dict[str, str]) -> List[str]:
    """The command line of a Makefile target's first recipe line, with $(PYTHON) and $(ARGS) filled in."""
    m = re.search(rf"^{re.escape(target)}:.*\n\t(.+)$", MAKEFILE, flags=re.M)
    assert m, f"the Makefile has no target {target!r}"
    recipe = m.group(1).replace("$(PYTHON)", "python").replace("$(ARGS)", variables.get("ARGS", ""))
    return shlex.split(recipe)


def to_argv(tokens: List[str]) -> Optional[List[str]]:
    """var-fast's arguments for `var-fast ...`, `python -m var_fast.cli ...` and `make sample ...`; else None."""
    if tokens[:1] == ["var-fast"]:
        return tokens[1:]
    if tokens[:3] == ["python", "-m", "var_fast.cli"]:
        return tokens[3:]
    if tokens[:2] == ["make", "sample"]:
        variables = dict(t.split("=", 1) for t in tokens[2:] if "=" in t)
        return to_argv(make_recipe("sample", variables))
    return None


def snippets() -> List[Snippet]:
    found = []
    for lang, first, text in code_blocks():
        if lang == "python":
            found.append(Snippet(first, lang, text))
            continue
        assert lang == "bash", f"README.md:{first}: a code block must say bash or python, got {lang!r}"
        lines = text.split("\n")
        i = 0
        while i < len(lines):
            start, command = i, lines[i]
            while command.rstrip().endswith("\\"):
                i += 1
                command = command.rstrip()[:-1] + " " + lines[i]
            i += 1
            tokens = shlex.split(command, comments=True)
            env = {}
            while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
                key, value = tokens.pop(0).split("=", 1)
                env[key] = value
            if tokens:
                found.append(Snippet(first + start, lang, " ".join(tokens), env, to_argv(tokens)))
    return found


def why_not_here(snippet: Snippet) -> Optional[str]:
    """Why a snippet cannot run in the tests (None: it runs)."""
    text = snippet.text
    if re.match(r"(python -m venv|\. \.venv|pip install)", text):
        return "installs packages and builds the extension (what `make sample` does before sampling; CI runs it)"
    if text.startswith("git clone"):
        return "clones the repository (the tests run in a checkout)"
    if text.startswith(("make test", "python -m pytest")):
        return "runs the whole test suite, this file among it"
    if text.startswith("python scripts/train_default_model.py"):
        return "trains the bundled model (an hour to a few hours; --quick: minutes); run by hand"
    if text.startswith("make install"):
        return "installs the requirements and builds the extension (what `make sample` does before sampling)"
    if (snippet.argv or [])[:1] == ["serve"]:
        return "starts a server that runs until stopped (tests/test_serve_*.py start it as a real process)"
    if text.startswith("curl"):
        return "talks to a running `var-fast serve` (tests/test_serve_api.py sends such requests)"
    if text.startswith("torchrun"):
        return "several processes sampling a published model's 50,000 images"
    if (snippet.argv or [])[:1] == ["info"]:
        return None  # info --model prints estimates from the shapes: no download
    if "--model" in (snippet.argv or []) or re.search(r"load\(\"(d\d+|code-\d+|infinity-[\w-]+)\"", text):
        return "downloads a published checkpoint from huggingface.co (tests/test_hub.py runs --model on a local cache)"
    if "var_d16.pth" in text:
        return "needs the published checkpoint files var_d16.pth and vae_ch160v4096z32.pth"
    if "--device cuda" in text and not torch.cuda.is_available():
        return "needs a CUDA GPU"
    return None  # it runs; a shell command that is not var-fast's fails test_every_snippet_is_run_or_listed


SNIPPETS = snippets()
RUNNABLE = [s for s in SNIPPETS if why_not_here(s) is None and (s.lang == "python" or s.argv is not None)]


def test_every_snippet_is_run_or_listed():
    unknown = [f"{s.id}: {s.text}" for s in SNIPPETS
               if s.lang == "bash" and s.argv is None and why_not_here(s) is None]
    assert unknown == [], ("README shows commands that tests/test_readme.py neither runs nor lists with a reason "
                           "(why_not_here): " + "; ".join(unknown))
    assert len(RUNNABLE) >= 10  # README's own examples, on the bundled model


def test_readme_starts_with_the_two_commands():
    first = next(code_blocks())
    assert first[1] == 4 and [s.text for s in SNIPPETS[:2]] == ["make sample", "make test"]


def test_readme_links_the_developer_guide():
    assert "(docs/DEVELOPING.md)" in README and os.path.isfile(os.path.join(REPO, "docs", "DEVELOPING.md"))


# ---- running them -----------------------------------------------------------------------------------------
FIRST = to_argv(["make", "sample"])  # README's first command


def same_run(argv: List[str]) -> bool:
    """The same command line as README's first command, once defaults are filled in."""
    parse = build_parser().parse_args
    return argv[:1] == ["sample"] and vars(parse(argv)) == vars(parse(FIRST))


@pytest.fixture(scope="module")
def after_make_sample(tmp_path_factory):
    """A folder where README's first command ran, with the image and mask README's "your image and mask"
    command edits (in.png 100x80, mask.png: white keeps, a black box is generated)."""
    folder = tmp_path_factory.mktemp("readme")
    here = os.getcwd()
    os.chdir(folder)
    try:
        assert main(FIRST) == 0
    finally:
        os.chdir(here)
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (80, 100, 3), dtype=np.uint8)).save(folder / "in.png")
    mask = np.full((80, 100), 255, dtype=np.uint8)
    mask[20:60, 30:70] = 0
    Image.fromarray(mask).save(folder / "mask.png")
    return folder


@pytest.fixture
def workdir(after_make_sample, tmp_path, monkeypatch):
    folder = tmp_path / "work"
    shutil.copytree(after_make_sample, folder)
    monkeypatch.chdir(folder)
    return folder


def test_first_command_wrote_what_readme_says(after_make_sample):
    samples = after_make_sample / "samples"
    for name in ("grid.png", "settings.json", "0000_disk_000.png", "0009_checkerboard_007.png"):
        assert (samples / name).is_file(), name
    assert len([n for n in os.listdir(samples) if n.endswith(".png")]) == 81  # 80 images and the grid


@pytest.mark.parametrize("snippet", [pytest.param(s, id=s.id) for s in SNIPPETS])
def test_snippet_runs_as_written(snippet, request):
    reason = why_not_here(snippet)
    if reason is not None:
        pytest.skip(f"{snippet.text[:60]}: {reason}")
    if snippet.lang == "bash" and snippet.argv is None:
        pytest.fail(f"{snippet.id}: {snippet.text} is neither run nor listed")
    folder = request.getfixturevalue("workdir")
    if snippet.lang == "python":
        exec(compile(snippet.text, snippet.id, "exec"), {"__name__": "__readme__"})
        return
    if same_run(snippet.argv):
        return  # README's first command: the fixture ran it in this very folder
    assert main(snippet.argv) == 0, snippet.text
    args = build_parser().parse_args(snippet.argv)
    if args.command == "edit":
        assert Image.open(folder / args.out).size == (64, 64)
    elif args.command == "sample":
        assert (folder / args.out / "grid.png").is_file()


# ---- the edit picture shows README's edit commands ----------------------------------------------------------
def readme_image_script():
    return load_script("make_readme_images")


def test_edit_picture_is_made_by_readme_commands():
    shown = [s.text for s in SNIPPETS if s.text.startswith("var-fast edit --image samples/")]
    assert shown == readme_image_script().EDIT_COMMANDS
    assert "![the four edits above, one per row](docs/edit_example.png)" in README


def test_readme_python_edit_example_names_a_written_file():
    assert 'load_image("samples/0000_disk_000.png"' in README


def test_one_log_prefix():
    offenders = []
    for folder, _, files in os.walk(os.path.join(REPO, "var_fast")):
        for name in files:
            if name.endswith(".py") and "[var-fast]" in open(os.path.join(folder, name)).read():
                offenders.append(name)
    assert offenders == [], "use the log prefix [var_fast]"


def test_samples_folder_is_ignored_by_git():
    if not os.path.isdir(os.path.join(REPO, ".git")) and not os.path.isfile(os.path.join(REPO, ".git")):
        pytest.skip("not a git checkout")
    proc = subprocess.run(["git", "-C", REPO, "check-ignore", "-q", "samples/0000_disk_000.png"])
    assert proc.returncode == 0, "samples/ (make sample's output) must be in .gitignore"
