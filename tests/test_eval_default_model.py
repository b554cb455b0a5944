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


def test_several_seeds_are_several_draws_with_one_classifier_and_a_pooled_accuracy(eval_script, monkeypatch, capsys):
    seeds, classifiers, backends = [], [], []

    class Sampler:
        def sample(self, labels, seed, **kwargs):
            seeds.append(seed)
            return torch.full((len(labels), 3, 64, 64), float(seed))

    def load(*a, backend, **k):
        backends.append(backend)
        return Sampler()

    monkeypatch.setattr(eval_script.var_fast, "load", load)
    monkeypatch.setattr(eval_script, "train_classifier", lambda: classifiers.append(1) or "clf")
    # a draw's accuracy here: its seed / 10 (read back off the images, so every draw is figured on its own)
    monkeypatch.setattr(eval_script, "figures",
                        lambda images, labels, clf, *refs: {"class_accuracy": images[0, 0, 0, 0].item() / 10})
    eval_script.main(["--per-class", "1", "--seed", "2", "5", "8", "--backend", "fast"])
    out = json.loads(capsys.readouterr().out)
    assert seeds == [2, 5, 8] and classifiers == [1] and backends == ["fast"]
    assert [d["seed"] for d in out["draws"]] == [2, 5, 8] and all(d["backend"] == "fast" for d in out["draws"])
    assert out["pooled_class_accuracy"] == pytest.approx(0.5) and out["class_accuracy_range"] == [0.2, 0.8]
    assert out["samples"] == 30


def test_one_seed_keeps_the_flat_figures(eval_script, monkeypatch, capsys):
    class Sampler:
        def sample(self, labels, **kwargs):
            return torch.zeros(len(labels), 3, 64, 64)

    monkeypatch.setattr(eval_script.var_fast, "load", lambda *a, **k: Sampler())
    monkeypatch.setattr(eval_script, "train_classifier", lambda: None)
    monkeypatch.setattr(eval_script, "figures", lambda *a: {"class_accuracy": 1.0})
    eval_script.main(["--per-class", "1", "--seed", "4"])
    out = json.loads(capsys.readouterr().out)
    assert out["seed"] == 4 and out["backend"] == "reference" and "draws" not in out


def test_vae_only_takes_one_seed(eval_script, capsys):
    with pytest.raises(SystemExit):
        eval_script.main(["--vae-only", "x.pth", "--seed", "0", "1"])
    assert "give one --seed" in capsys.readouterr().err


def test_patch_nums_belong_to_vae_only(eval_script, capsys):
    with pytest.raises(SystemExit):
        eval_script.main(["--patch-nums", "1", "2", "4"])
    assert "--patch-nums needs --vae-only" in capsys.readouterr().err


def test_vae_only_quantizes_over_the_given_scales(eval_script, monkeypatch, tmp_path):
    """--vae-only --patch-nums: the VQVAE is built with those scales (a VAR trained on another schedule
    is judged by the reconstructions its own token maps allow)."""
    from var_fast.models import VQVAE, VQVAEConfig
    cfg = VQVAEConfig(vocab_size=16, z_channels=8, ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1,
                      using_sa=False, using_mid_sa=False, patch_nums=(1, 2, 3, 4, 6, 8))
    path = tmp_path / "vae.pth"
    torch.save(VQVAE(cfg).state_dict(), path)
    seen = []
    real_img_to_idx = VQVAE.img_to_idx

    def img_to_idx(self, x):
        seen.append(tuple(self.quantize.v_patch_nums))
        return real_img_to_idx(self, x)

    monkeypatch.setattr(VQVAE, "img_to_idx", img_to_idx)
    monkeypatch.setattr(eval_script, "train_classifier", lambda: None)
    monkeypatch.setattr(eval_script, "figures", lambda *a: {})
    out = eval_script.reconstruction_figures(str(path), 1, 0, False, (1, 2, 3, 4, 5, 6, 7, 8))
    assert out["patch_nums"] == [1, 2, 3, 4, 5, 6, 7, 8] and seen and set(seen) == {(1, 2, 3, 4, 5, 6, 7, 8)}
