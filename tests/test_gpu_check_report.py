"""gpu-check's report: stage table, op tables with the fastest backend, sampler ratios, JSON."""
import json

from benchmarks.gpu_check import cuda_tests, report
from benchmarks.gpu_check.main import read_records
from benchmarks.gpu_check.stage import PASSED, TIMEOUT, StageResult

ENV = dict(date="2026-12-02 10:00 UTC", gpu="NVIDIA H200", driver="580.1", torch="2.11.0+cu130", cuda="13.0",
           python="3.12.3", commit="abc1234", cores="16")


def rec(section, impl, status="ok", **fields):
    case = fields.pop("case", {})
    return dict(section=section, impl=impl, status=status, case=case, **fields)


def records():
    att = dict(model="d16", scale=8, B=32, H=16, L=169, kv=424, c=64, dtype="bfloat16")
    case = dict(model="d16", image=256, batch=16, dtype="bfloat16")
    return [
        rec("peak", "torch.matmul", case=dict(n=8192, dtype="bfloat16"), runs=20, median_ms=1.4, flops_per_s=7.8e14),
        rec("sampling", "var_fast", case=dict(op="sample_top_k_top_p", rows=16384, V=4096), median_ms=0.5),
        rec("sampling", "reference sort", case=dict(op="sample_top_k_top_p", rows=16384, V=4096), median_ms=5.0),
        rec("sampling", "torch.topk", case=dict(op="sample_top_k_top_p", rows=16384, V=4096), median_ms=2.0),
        rec("attention", "var_fast", case=att, median_ms=0.3),
        rec("attention", "sdpa flash", case=att, median_ms=0.2),
        rec("attention", "sdpa cudnn", "error", case=att, error="RuntimeError: no kernel"),
        rec("attention", "sdpa math", "deadline", case=att),
        rec("model", "build", case=dict(model="d16"), settings=dict(cfg=1.5, top_k=900, top_p=0.96)),
        rec("upstream_check", "upstream", "refused", case=dict(model="d16"), reason="greedy tokens differ: 3 of 680"),
        rec("sampler", "fast", case=case, latency_s=0.5, images_per_s=32.0, peak_memory_gib=12.0, floor_fraction=0.2),
        rec("sampler", "reference", case=case, latency_s=2.0, images_per_s=8.0, peak_memory_gib=20.0),
        rec("sampler", "upstream", case=case, latency_s=2.5, images_per_s=6.4),
        rec("decode", "vqvae decoder", case=case, latency_s=0.1),
    ]


def stages():
    return [StageResult("build", PASSED, 61.0, 150, "arch 9.0, 16 jobs").to_json(),
            StageResult("tests", TIMEOUT, 110.0, 110, "no junit XML written", output_tail=["E  boom"]).to_json()]


def test_markdown_holds_header_stages_and_tables():
    md = report.markdown(ENV, "python -m benchmarks.gpu_check --out o", stages(), records(), 400.0, 480, mode="gpu")
    assert md.startswith("## 2026-12-02 10:00 UTC — gpu-check, NVIDIA H200, driver 580.1, torch 2.11.0+cu130")
    assert "Commit `abc1234`" in md and "    python -m benchmarks.gpu_check --out o" in md
    assert "| tests | out of time | 110.0 | 110 | no junit XML written |" in md and "    E  boom" in md
    assert "**780 TFLOP/s**" in md
    assert "| sample_top_k_top_p | 16,384 | 0.5 | 5 | 2 | 4.00x |" in md  # against the best baseline
    att = next(line for line in md.splitlines() if line.startswith("| d16 | 8 |"))
    assert att.endswith("| 0.3 | 0.2 | error | out of time | sdpa flash |")
    fast = next(line for line in md.splitlines() if "| fast |" in line)
    assert "| 4.00x |" in fast and "refused: greedy tokens differ: 3 of 680" in fast
    assert "| 0.1 |" in fast  # decode column
    assert "CPU smoke mode" not in md


def test_smoke_reports_say_they_are_cpu_numbers():
    md = report.markdown(dict(ENV, gpu="none (CPU)"), "cmd", stages(), [], 10.0, 480, mode="smoke")
    assert "CPU smoke mode" in md and "not GPU results" in md
    assert "Peak matmul rate: not measured" in md


def test_write_json(tmp_path):
    md, js = report.write(str(tmp_path), ENV, "cmd", stages(), records(), 1.0, 480, False)
    data = json.load(open(js))
    assert data["stages"][1]["status"] == TIMEOUT and len(data["records"]) == len(records())
    assert open(md).read().startswith("## ")


def test_records_survive_a_killed_writer(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps(rec("peak", "x")) + "\n" + '{"section": "samp')
    assert [r["section"] for r in read_records(str(path))] == ["peak"]


def test_junit_summary_and_marker_check(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text("""<testsuites><testsuite>
      <testcase classname="tests.test_sampling" name="a[cuda]"/>
      <testcase classname="tests.test_sampling" name="b[cuda]"><failure message="x"/></testcase>
      <testcase classname="tests.test_default_model" name="c[fast-cuda-graphs]"/>
      <testcase classname="tests.test_edit" name="d[cuda]"><skipped message="needs a CUDA GPU"/></testcase>
    </testsuite></testsuites>""")
    s = cuda_tests.summarize_junit(str(xml))
    assert s["counts"] == dict(tests=4, passed=2, failed=1, skipped=1)
    assert s["e2e"] == dict(tests=2, passed=1, failed=0, skipped=1)
    assert s["failed"] == ["tests.test_sampling::b[cuda]"]
    assert cuda_tests.marker_registered("@pytest.mark.slow: x\n@pytest.mark.cuda: needs a CUDA GPU\n")
    assert not cuda_tests.marker_registered("@pytest.mark.cudagraphs: x\n")
    assert "-m" in cuda_tests.pytest_command("o") and "cuda" in cuda_tests.pytest_command("o")


def test_left_out_cases_are_listed_as_such():
    left = [rec("left_out", "-", "deadline", case=dict(section="sampler", model="d36", image=512, batch=64,
                                                         dtype="bfloat16")),
            rec("sampler", "upstream", "deadline", case=dict(model="d30", batch=64))]
    md = report.markdown(ENV, "cmd", stages(), records() + left, 400.0, 480, mode="gpu")
    section = md[md.index("Left out by the time budget"):]
    assert "- sampler: model d36, batch 64" in section and "- sampler: model d30, batch 64 — upstream" in section
    assert "- attention: model d16, scale 8, B 32, H 16, L 169, kv 424, c 64, dtype bfloat16 — sdpa math" in section
    finished = [r for r in records() if r["status"] != "deadline"]
    assert "Left out" not in report.markdown(ENV, "cmd", stages(), finished, 400.0, 480, mode="gpu")


def test_batch_1_latency_per_scale():
    split = rec("scales", "fast", case=dict(model="d16", batch=1), scale_ms=[0.9, 1.2, 15.0, 140.0],
                after_last_scale_ms=20.0)
    md = report.markdown(ENV, "cmd", stages(), records() + [split], 400.0, 480, mode="gpu")
    assert "| d16 | fast | 177 | 0.9 · 1.2 · 15 · 140 | 20 |" in md


def test_headline_sampler_table_comes_before_the_op_tables():
    md = report.markdown(ENV, "cmd", stages(), records(), 400.0, 480, mode="gpu")
    assert md.index("Whole sampler") < md.index("Sampling, V = 4096") < md.index("Attention over")


def test_rehearsal_reports_say_nothing_is_a_gpu_result():
    md = report.markdown(dict(ENV, gpu="none (CPU)"), "cmd", stages(), [], 10.0, 480, mode="rehearsal")
    assert "REHEARSAL" in md and "RECORDED outputs" in md and "Nothing here is a GPU result" in md


def test_float32_row_says_what_float32_costs():
    case = dict(model="d16", image=256, batch=1, dtype="bfloat16")
    rows = [rec("sampler", "fast", case=case, latency_s=0.2, images_per_s=5.0),
            rec("sampler", "fast float32", case=case, latency_s=0.5, images_per_s=2.0),
            rec("sampler", "reference", case=case, latency_s=1.0, images_per_s=1.0)]
    md = report.markdown(ENV, "cmd", stages(), rows, 400.0, 480, mode="gpu")
    line = next(x for x in md.splitlines() if "| fast float32 |" in x)
    assert "| 0.5 |" in line and "| 2.00x |" in line


def test_collaborative_pairs_against_the_drafter_alone():
    case = dict(pair="d30+d16", batch=64, dtype="bfloat16")
    rows = [rec("collab", "fast", case=dict(case, draft_steps="drafter alone"), latency_s=2.0, images_per_s=32.0),
            rec("collab", "fast", case=dict(case, draft_steps=8), latency_s=1.0, images_per_s=64.0),
            rec("collab", "fast", "deadline", case=dict(case, draft_steps=6))]
    md = report.markdown(ENV, "cmd", stages(), records() + rows, 400.0, 480, mode="gpu")
    assert "| d30+d16 | 64 | 8 | fast | bfloat16 | 1 | 64 | — | 2.00x vs drafter alone |" in md
    assert "| d30+d16 | 64 | drafter alone | fast | bfloat16 | 2 | 32 | — | — |" in md
    # the case the deadline left out is listed as such
    assert "- collab: pair d30+d16, batch 64, dtype bfloat16, draft_steps 6 — fast" in md


def run_tiny_pair(code=None) -> list:
    """collab_bench on the CPU modes' pair (tiny drafts, tiny-refiner refines), batch 1: its records."""
    import time

    import pytest
    import torch
    from var_fast.native import extension
    if not extension.available():
        pytest.skip(f"var_fast._C is not built: {extension.load_error()}")
    from benchmarks.gpu_check import collab_bench
    from benchmarks.gpu_check.clock import Deadline

    class Rec(list):
        def add(self, section, **fields):
            self.append(dict(section=section, **fields))

    got = Rec()
    collab_bench.run(got, torch.device("cpu"), torch.float32, Deadline(time.time() + 300), [1], smoke=True, reps=1,
                     code=code)
    return got


def test_collaborative_bench_runs_the_pair_and_the_drafter_alone():
    """The CPU modes' pair through the same code the GPU check runs."""
    got = run_tiny_pair()
    steps = [r["case"]["draft_steps"] for r in got]
    assert steps == ["drafter alone", 3, 2] and all(r["status"] == "ok" for r in got), got
