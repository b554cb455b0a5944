"""gpu-check's comparison with CoDe's own code (``--code DIR``): its greedy check and timing on the CPU
modes' tiny pair. Needs a czg1225/CoDe checkout named by VAR_FAST_CODE_CHECKOUT (and huggingface_hub,
which its models/var.py imports); it skips with that reason otherwise."""
import os

import pytest

CHECKOUT = os.environ.get("VAR_FAST_CODE_CHECKOUT")


@pytest.mark.skipif(not CHECKOUT, reason="needs a czg1225/CoDe checkout in VAR_FAST_CODE_CHECKOUT")
def test_code_pair_is_compared_after_its_greedy_tokens_match():
    from benchmarks.gpu_check import report
    from benchmarks.gpu_check.code_upstream import CoDeUpstream
    from test_gpu_check_report import run_tiny_pair

    got = run_tiny_pair(CoDeUpstream(CHECKOUT))
    checks = [r for r in got if r["section"] == "code_check"]
    assert [r["status"] for r in checks] == ["ok", "ok"], checks  # greedy tokens equal at N = 3 and 2
    impls = {(r["case"]["draft_steps"], r["impl"]): r["status"] for r in got if r["section"] == "collab"}
    assert impls[(3, "CoDe (its code)")] == "ok" and impls[(2, "fast, decode included")] == "ok"
    assert "vs CoDe's code" in "\n".join(report.collab_section(got))
