"""``FastSampler.sample(groups=...)``: rows of unrelated requests in one pass, each drawn with its own seed
and settings, give the tokens (and f_hat) each request gets alone; padding rows change nothing."""
import pytest
import torch

import var_fast
from var_fast.native import extension as _ext


@pytest.mark.skipif(_ext.extension() is None, reason="the fast backend needs the native extension")
def test_groups_equal_each_request_alone():
    from var_fast.fast_sampler import RowGroup
    fast = var_fast.load(backend="fast", device="cpu")._fast_sampler()
    requests = [  # (label, n, seed, cfg, top_k, top_p)
        (3, 2, 11, 3.0, 0, 0.0),
        (7, 1, 2**62 + 5, 1.5, 20, 0.9),
        (0, 2, 0, 0.0, 5, 0.0),
    ]
    groups, labels, start = [], [], 0
    for label, n, seed, cfg, k, p in requests:
        groups.append(RowGroup(start, start + n, seed, cfg, k, p))
        labels += [label] * n
        start += n
    labels += [4, 4]  # padding rows: in no group
    seen = []
    f_hat, tokens = fast.sample(torch.tensor(labels), seed=0, groups=groups,
                                on_f_hat=lambda si, f: seen.append(si))
    assert seen == list(range(len(tokens)))
    for g, (label, n, seed, cfg, k, p) in zip(groups, requests):
        alone_f, alone_t = fast.sample(torch.full((n,), label), seed=seed, cfg=cfg, top_k=k, top_p=p)
        assert all(torch.equal(t[g.start:g.stop], a) for t, a in zip(tokens, alone_t)), (label, seed)
        assert torch.equal(f_hat[g.start:g.stop], alone_f)
    assert all(bool((t[start:] == 0).all()) for t in tokens)
    with pytest.raises(ValueError, match="more_smooth"):
        fast.sample(torch.tensor(labels), seed=0, groups=groups, more_smooth=True)
