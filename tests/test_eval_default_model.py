"""scripts/eval_default_model.py passes its sampling options (one temperature or one per scale) to the sampler."""
from __future__ import annotations

import json

import pytest
import torch
from repo_scripts import load_script



@pytest.fixture(scope="module")
def eval_script():
    return load_script("eval_default_model")


@pytest.mark.parametrize("flags, want", [([], 1.0), (["--temperature", "0.5"], 0.5),
                                         (["--temperature", "1", "0.7", "0.7", "1", "1", "1"], [1.0, 0.7, 0.7, 1.0, 1.0, 1.0])])
def test_temperature_reaches_the_sampler(eval_script, monkeypatch, flags, want, capsys):
    seen = {}

    class Sampler:
        def sample(self, labels, **kwargs):
            seen.update(kwargs)
            return torch.zeros(len(labels), 3, 64, 64)

    monkeypatch.setattr(eval_script.var_fast, "load", lambda *a, **k: Sampler())
    monkeypatch.setattr(eval_script, "train_classifier", lambda: None)
    monkeypatch.setattr(eval_script, "figures", lambda *a: {})
    eval_script.main(["--per-class", "1", "--cfg", "2", "--top-p", "0.7"] + flags)
    assert seen["temperature"] == want and seen["cfg"] == 2 and seen["top_p"] == 0.7
    assert json.loads(capsys.readouterr().out)["temperature"] == want  # and it is reported
