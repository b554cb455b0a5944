"""`var-fast serve`'s command line: safe defaults and the CLI's checks before any model loads."""
import sys

import pytest

from var_fast.cli import build_parser, main


def test_defaults_listen_on_loopback_only():
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 7860
    assert args.max_queue == 64 and args.max_images == 8 and args.max_batch is None


@pytest.mark.parametrize("argv,message", [
    (["serve", "--var", "a.pth"], "pass both --var and --vae"),
    (["serve", "--model", "d16", "--var", "a.pth", "--vae", "b.pth"], "either --model NAME or --var/--vae"),
    (["serve", "--port", "70000"], "--port must be in 0..65535"),
    (["serve", "--batch-window-ms", "-1"], "--batch-window-ms must be >= 0"),
])
def test_bad_flags_fail_before_the_model_loads(argv, message, capsys, no_model_load):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_without_the_serve_extra_the_error_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    assert main(["serve"]) == 2
    assert "pip install 'var_fast[serve]'" in capsys.readouterr().err


def test_non_loopback_host_is_announced(capsys):
    from var_fast.cli.serve import _check_host_port
    _check_host_port("0.0.0.0", 8000)
    assert "reachable from other machines" in capsys.readouterr().err
    _check_host_port("127.0.0.1", 8000)
    _check_host_port("localhost", 8000)
    assert capsys.readouterr().err == ""
