"""gpu-check's benchmark order: the headline numbers first, then the op tables, then the rest."""
import pytest

from benchmarks.gpu_check.run_benchmarks import HEADLINE, parse_headline, plan

MODELS, BATCHES = ["d16", "d20", "d24", "d30", "d36"], [1, 16, 64]


def test_headline_cases_then_ops_then_the_rest():
    steps = plan(MODELS, BATCHES, parse_headline(HEADLINE))
    assert steps[:3] == [("sampler", "d16", [1]), ("sampler", "d30", [64]), ("ops", "", [])]
    assert steps[3:] == [("sampler", "d16", [16, 64]), ("sampler", "d20", [1, 16, 64]), ("sampler", "d24", [1, 16, 64]),
                         ("sampler", "d30", [1, 16]), ("sampler", "d36", [1, 16, 64])]


def test_every_case_once():
    steps = plan(MODELS, BATCHES, parse_headline(HEADLINE))
    cases = [(m, b) for kind, m, bs in steps if kind == "sampler" for b in bs]
    assert sorted(cases) == sorted((m, b) for m in MODELS for b in BATCHES)


def test_headline_cases_outside_the_chosen_models_or_batches_are_dropped():
    assert plan(["d16"], [16], parse_headline(HEADLINE)) == [("ops", "", []), ("sampler", "d16", [16])]


def test_skipped_sections():
    assert plan(["d16"], [1], [("d16", 1)], ops=False) == [("sampler", "d16", [1])]
    assert plan(["d16"], [1], [("d16", 1)], sampler=False) == [("ops", "", [])]


def test_bad_headline():
    with pytest.raises(ValueError, match="MODEL:BATCH"):
        parse_headline("d16")
