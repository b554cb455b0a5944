"""The colour statistics of scripts/eval_default_model.py: the Frechet distance and its per-feature parts."""
import pytest
import torch

from var_fast.datasets.shape_stats import COLOUR_FEATURE_NAMES, colour_feature_shifts, frechet_distance


def features(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, len(COLOUR_FEATURE_NAMES), generator=g) * torch.linspace(0.01, 0.3, 7) + 0.5


def test_the_reference_itself_has_no_shift_and_its_own_spread():
    ref = features(400, 0)
    shifts = colour_feature_shifts(ref, ref)
    assert list(shifts) == list(COLOUR_FEATURE_NAMES)
    assert all(v == {"mean_shift": 0.0, "std_ratio": 1.0} for v in shifts.values())
    assert frechet_distance(ref, ref) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("feature", range(7))
def test_a_shifted_or_narrowed_feature_is_named_in_reference_standard_deviations(feature):
    ref = features(400, 1)
    sd, mean = ref[:, feature].std(), ref[:, feature].mean()
    moved = ref.clone()
    moved[:, feature] += 0.5 * sd  # half a standard deviation up
    shifts = colour_feature_shifts(moved, ref)
    assert shifts[COLOUR_FEATURE_NAMES[feature]] == {"mean_shift": 0.5, "std_ratio": 1.0}
    assert all(v == {"mean_shift": 0.0, "std_ratio": 1.0} for k, v in shifts.items() if k != COLOUR_FEATURE_NAMES[feature])
    narrowed = ref.clone()
    narrowed[:, feature] = mean + (ref[:, feature] - mean) * 0.3  # 30% of the variety, the same mean
    got = colour_feature_shifts(narrowed, ref)[COLOUR_FEATURE_NAMES[feature]]
    assert got == {"mean_shift": 0.0, "std_ratio": 0.3}
    # the Frechet distance of one narrowed feature is its (1 - ratio)^2 in these units
    assert frechet_distance(narrowed, ref) == pytest.approx((1 - 0.3) ** 2, rel=1e-6)
