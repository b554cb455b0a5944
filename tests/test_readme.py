"""README agrees with the code: the editing examples run on what `make sample` writes; one log prefix;
`make sample`'s output folder is ignored by git."""
import os
import re
import shlex
import subprocess

import pytest

import var_fast
from var_fast.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(var_fast.__file__)))
README = open(os.path.join(REPO, "README.md")).read()


def readme_edit_commands():
    lines = re.findall(r"^var-fast edit --image samples/.*$", README, flags=re.M)
    return [shlex.split(line.split("#")[0])[1:] for line in lines]


def test_readme_has_edit_examples_on_make_sample_output():
    assert len(readme_edit_commands()) >= 3


def test_readme_edit_examples_run_after_make_sample(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fast = ["--device", "cpu", "--backend", "reference"]
    # what `make sample` runs (python -m var_fast.cli sample --out samples), cut to one image of class 0
    assert main(["sample", "--out", "samples", "--classes", "0", "--per-class", "1"] + fast) == 0
    for args in readme_edit_commands():
        image = args[args.index("--image") + 1]
        assert os.path.isfile(image), f"README edits {image}, which `make sample` does not write"
        assert main(args + fast) == 0, args
        assert os.path.isfile(args[args.index("--out") + 1])


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
