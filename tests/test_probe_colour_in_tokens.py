"""scripts/probe_colour_in_tokens.py: its probe finds a feature its input carries and not one it does not."""
import pytest
import torch

from repo_scripts import load_script


@pytest.fixture(scope="module")
def probe():
    return load_script("probe_colour_in_tokens")


def test_probe_reads_what_the_input_carries_and_nothing_else(probe):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1200, 4, 8, 8, generator=g)
    carried = x[:, 0, 2:6, 2:6].mean((1, 2)) + 0.5 * x[:, 2, :4].mean((1, 2))  # a masked mean, as a colour feature
    absent = torch.randn(1200, generator=g)  # independent of x
    y = torch.stack([carried, absent], dim=1)
    r2 = probe.fit_probe(x[:1000], y[:1000], x[1000:], y[1000:], epochs=15)
    assert r2.shape == (2,)
    assert r2[0] > 0.8, r2
    assert r2[1] < 0.1, r2


def test_flags_are_checked_before_any_work(probe, capsys):
    with pytest.raises(SystemExit):
        probe.main(["--images", "50"])
    assert "--images must be >= 100" in capsys.readouterr().err
