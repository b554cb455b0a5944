"""gpu-check's upstream comparison: the greedy-token check and the refusal to print a ratio without it."""
import sys
import types

import pytest
import torch

from benchmarks.gpu_check.sampler_bench import Estimator, sampling_settings
from benchmarks.gpu_check.upstream import Upstream, compare_tokens, ratio_or_refusal


def tokens(*scales):
    return [torch.tensor(s).view(1, -1) for s in scales]


def test_equal_tokens_pass():
    v = compare_tokens(tokens([1], [2, 3, 4, 5]), tokens([1], [2, 3, 4, 5]))
    assert v.ok and v.total == 5 and v.differing == 0


def test_differing_tokens_are_refused_with_where():
    v = compare_tokens(tokens([1], [2, 3, 4, 5]), tokens([1], [2, 9, 4, 8]))
    assert not v.ok and v.differing == 2 and "first at scale 1" in v.reason and "2 of 5" in v.reason


@pytest.mark.parametrize("upstream", [tokens([1]), tokens([1], [2, 3])])
def test_missing_scales_or_shapes_are_refused(upstream):
    assert not compare_tokens(tokens([1], [2, 3, 4, 5]), upstream).ok


def test_ratio_only_after_a_passed_check():
    ok = compare_tokens(tokens([1]), tokens([1]))
    bad = compare_tokens(tokens([1]), tokens([2]))
    assert ratio_or_refusal(0.5, 1.5, ok) == "3.00x"
    assert ratio_or_refusal(0.5, 1.5, bad).startswith("refused: greedy tokens differ")
    assert ratio_or_refusal(0.5, None, ok) == "not measured"
    assert ratio_or_refusal(0.5, 1.5, None) == "no upstream (--upstream DIR)"


def test_not_a_checkout(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a FoundationVision/VAR checkout"):
        Upstream(str(tmp_path))


def test_recording_wraps_and_restores_upstreams_sampler(monkeypatch):
    module = types.SimpleNamespace(sample_with_top_k_top_p_=lambda logits, **kw: logits.argmax(-1, keepdim=True))
    up = Upstream.__new__(Upstream)
    up.var_module = module
    original = module.sample_with_top_k_top_p_
    got = []
    with up.recording_tokens(got):
        module.sample_with_top_k_top_p_(torch.tensor([[[0.1, 0.9], [0.8, 0.2]]]), top_k=1)
    assert module.sample_with_top_k_top_p_ is original
    assert torch.equal(got[0], torch.tensor([[1, 0]]))


def test_estimator_scales_by_flops_at_the_same_batch_size():
    e = Estimator()
    assert e.predict("fast", 16, 1e12) is None
    e.update("fast", 16, 1e12, 0.5)
    assert e.predict("fast", 16, 4e12) == pytest.approx(2.0) and e.predict("reference", 16, 1e12) is None
    # batch 1 is launch-bound: its rate must not predict batch 64 (it would leave the headline d30 batch 64 out)
    e.update("fast", 1, 1e10, 0.3)
    assert e.predict("fast", 64, 1e14) is None


def test_sampling_settings_fit_the_vocabulary():
    assert sampling_settings(4096) == dict(cfg=1.5, top_k=900, top_p=0.96)
    assert sampling_settings(64)["top_k"] <= 64


def test_per_scale_split_has_one_gap_per_scale_and_the_decode():
    import time
    from benchmarks.gpu_check.sampler_bench import per_scale_ms

    def sample(on_scale):
        for si in range(3):
            time.sleep(0.01 * (si + 1))
            on_scale(si, 3)
        time.sleep(0.02)

    split = per_scale_ms(sample, torch.device("cpu"))
    assert len(split["scale_ms"]) == 3
    assert split["scale_ms"][2] >= 30 and split["after_last_scale_ms"] >= 20
