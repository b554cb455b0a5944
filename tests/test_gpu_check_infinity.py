"""gpu-check's Infinity stage on the CPU (tiny shapes): the FLOP formula against torch's FLOP counter, the switch
where the fast loop plugs in, the stage's child process end to end (reference loop, and upstream's with an
Infinity checkout), its verdict and its report section."""
import dataclasses
import importlib.machinery
import json
import os
import sys
import types

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.gpu_check import infinity_bench, infinity_models, infinity_stage
from benchmarks.gpu_check import main as gpu_check
from benchmarks.gpu_check.flops import infinity_flops, infinity_image_flops
from benchmarks.gpu_check.report import infinity_section, markdown
from benchmarks.gpu_check.stage import FAILED, PASSED, SKIPPED
from benchmarks.gpu_check.verdict import judge_benchmarks, read_records
from var_fast.infinity import Infinity, infer_reference

CHECKOUT = os.environ.get("VAR_FAST_INFINITY_CHECKOUT")
needs_upstream = pytest.mark.skipif(not CHECKOUT, reason="set VAR_FAST_INFINITY_CHECKOUT to a FoundationVision/Infinity "
                                                         "checkout (commit 4c27bbb) to run upstream's loop")


# ---- FLOPs ----------------------------------------------------------------------------------------------------
def counted(fn) -> int:
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter, torch.no_grad():  # attention as matmuls the counter sees
        fn()
    return counter.get_total_flops()


VARIANTS = {
    "published layout": {},
    "per-block AdaLN, SwiGLU, RMS norms, 2-layer head": dict(shared_aln=False, swiglu=True, rms_norm=True,
                                                             head_depth=2, block_chunks=0),
    "no head AdaLN": dict(head_aln=False),
}


@pytest.mark.parametrize("cfg_scale", [3.0, 1.0])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_infinity_flops_match_the_counter_on_the_reference_loop(variant, cfg_scale):
    base, vae_cfg = infinity_models.configs("tiny")
    cfg = dataclasses.replace(base, **VARIANTS[variant])
    model = Infinity(cfg).eval()
    _, vae = infinity_models.build("tiny", "cpu")
    schedule = infinity_models.schedule("tiny")
    tokens, batch = 7, 2
    cond = infinity_models.text_condition(batch, cfg.text_channels, "cpu", tokens=tokens)
    got = counted(lambda: infer_reference(model, vae, cond, schedule, cfg_list=cfg_scale, seed=0, decode=False))
    cfg_doubled = cfg_scale != 1
    parts = infinity_flops(cfg, schedule, tokens, cfg_doubled)
    # the reference recomputes the head's AdaLN projection (and per-block AdaLN ones) at every scale; the
    # formula has them once per image
    seqs, C = 2 if cfg_doubled else 1, cfg.embed_dim
    per_image = (2 * C * 2 * C if cfg.head_aln else 0) + (0 if cfg.shared_aln else cfg.depth * 2 * C * 6 * C)
    again = (len(schedule) - 1) * seqs * per_image
    assert got == batch * (sum(parts.values()) + again)


def test_infinity_2b_flops_at_1m():
    cfg, _ = infinity_models.configs("infinity-2b")
    schedule = infinity_models.schedule("infinity-2b")
    parts = infinity_flops(cfg, schedule, 64)
    tokens = sum(h * w for _, h, w in schedule)
    assert tokens == 10521 and len(schedule) == 13
    C, M = 2048, 8192
    # 32 blocks of 6 C^2 + 2 C M weights per token, both CFG halves, 2 FLOPs per multiply-add
    assert parts["linear"] == 2 * 2 * tokens * 32 * (6 * C * C + 2 * C * M)
    assert 110e12 < infinity_image_flops(cfg, schedule, 64) < 120e12  # docs/DEVELOPING.md quotes ~115 TFLOP


# ---- the fast loop's switch -----------------------------------------------------------------------------------
class FakeFastSampler:
    """A test double with InfinityFastSampler's API that runs the reference loop: only this test's plumbing
    check (the stage times whatever class fast_backend() returns)."""
    made = []

    def __init__(self, model, vae, *, dtype=torch.float32, cuda_graphs=True):
        self.model, self.vae, self.dtype = model, vae, dtype
        weights = model.all_blocks()[0].sa.mat_qkv.weight.dtype  # which weights it was given
        FakeFastSampler.made.append((dtype, cuda_graphs, weights))

    def sample(self, cond, schedule, *, cfg_list=3.0, tau_list=1.0, top_k=0, top_p=0.0, seed=0, decode=True, **kw):
        with torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype != torch.float32):
            return infer_reference(self.model, self.vae, cond, schedule, cfg_list=cfg_list, tau_list=tau_list,
                                   top_k=top_k, top_p=top_p, seed=seed, decode=decode)


class FlippingFastSampler(FakeFastSampler):
    def sample(self, *args, **kwargs):
        out = super().sample(*args, **kwargs)
        out.bits[-1] = 1 - out.bits[-1]  # every bit of the last scale wrong
        return out


class BrokenFastSampler(FakeFastSampler):
    def sample(self, *args, **kwargs):
        raise RuntimeError("kernel exploded")


@pytest.fixture
def fast_module(monkeypatch):
    """Puts a var_fast.infinity.fast_sampler module holding ``cls`` in place (or takes the real one away)."""
    def install(cls):
        if cls is None:
            monkeypatch.setattr(infinity_bench.importlib.util, "find_spec",
                                lambda name, *a: None if name == infinity_bench.FAST_MODULE else _find_spec(name, *a))
            return
        module = types.ModuleType(infinity_bench.FAST_MODULE)
        module.__spec__ = importlib.machinery.ModuleSpec(infinity_bench.FAST_MODULE, None)
        module.InfinityFastSampler = cls
        monkeypatch.setitem(sys.modules, infinity_bench.FAST_MODULE, module)
    _find_spec = importlib.util.find_spec
    FakeFastSampler.made = []
    return install


def test_fast_backend_is_none_with_the_reason_without_the_module(fast_module):
    fast_module(None)
    cls, why = infinity_bench.fast_backend()
    assert cls is None and "var_fast.infinity.fast_sampler is not in this tree" in why


def test_fast_backend_is_the_modules_class(fast_module):
    fast_module(FakeFastSampler)
    assert infinity_bench.fast_backend() == (FakeFastSampler, "")


# ---- the child process's cases ------------------------------------------------------------------------------------
def run_child(tmp_path, *extra, deadline_s=600):
    import time
    path = tmp_path / "records.jsonl"
    argv = ["--records", str(path), "--deadline", str(time.time() + deadline_s), "--cpu-smoke", "--batches", "1,2",
            "--peak-flops", "1e10", *extra]
    assert infinity_bench.main(argv) == 0
    return read_records(str(path))


def by(records, section):
    return {(r["impl"], r["case"].get("batch")): r for r in records if r.get("section") == section}


def test_without_the_fast_loop_the_reference_is_timed_and_fast_is_marked_unavailable(tmp_path, fast_module):
    fast_module(None)
    records = run_child(tmp_path)
    got = by(records, "infinity")
    for batch in (1, 2):
        ref = got[("reference", batch)]
        assert ref["status"] == "ok" and ref["latency_s"] > 0 and ref["images_per_s"] == pytest.approx(batch / ref["latency_s"])
        assert ref["floor_fraction"] == pytest.approx(ref["case"]["batch"] * records_model(records)["flops_per_image"]
                                                      / 1e10 / ref["latency_s"])
        assert ref["estimated_gib"] > 0 and "peak_memory_gib" not in ref and "resident_gib" not in ref  # CUDA only
        assert got[("fast", batch)]["status"] == "unavailable"
    assert not by(records, "infinity_check")  # neither a fast loop nor upstream to check
    status, detail = judge_benchmarks(records, 0)
    assert (status, detail) == (PASSED, "2 measurements")  # an unavailable backend is no measurement
    assert infinity_stage.summary(records) == "fast loop not in this tree"
    model = records_model(records)
    cfg, _ = infinity_models.configs("tiny")
    assert model["flops_per_image"] == infinity_image_flops(cfg, infinity_models.schedule("tiny"), infinity_models.PROMPT_TOKENS)
    assert model["case"] == dict(model="tiny", image="256x256", dtype="float32")


def records_model(records):
    return next(r for r in records if r["section"] == "infinity_model")


def test_a_passed_deadline_leaves_every_case_out(tmp_path, fast_module):
    fast_module(None)
    records = run_child(tmp_path, deadline_s=-1)
    assert [r["case"]["batch"] for r in records if r["section"] == "left_out"] == [1, 2]
    assert not by(records, "infinity")


def test_the_fast_loop_is_checked_then_timed_when_it_is_there(tmp_path, fast_module):
    fast_module(FakeFastSampler)
    records = run_child(tmp_path)
    check = by(records, "infinity_check")[("fast", 2)]
    assert check["status"] == "ok" and check["differing"] == 0 and check["total"] > 0
    assert check["case"]["pixels"] == infinity_models.CHECK_PIXELS and check["case"]["dtype"] == "float32"
    got = by(records, "infinity")
    assert got[("fast", 1)]["status"] == "ok" and got[("fast", 2)]["status"] == "ok"
    # one sampler for the check (float32), one per batch size for the timing, no CUDA graphs on the CPU
    assert FakeFastSampler.made == [(torch.float32, False, torch.float32)] * 3
    assert judge_benchmarks(records, 0)[0] == PASSED


def test_the_gpu_flow_in_bfloat16_on_the_cpu(tmp_path, fast_module):
    """What the GPU run does, minus CUDA: checks in float32, then the blocks to bf16 (upstream's bf16=1) and
    the fast loop and the reference (under autocast) on them."""
    import time
    from benchmarks.gpu_check.clock import Deadline
    from benchmarks.gpu_check.run_benchmarks import Recorder
    fast_module(FakeFastSampler)
    path = tmp_path / "r.jsonl"
    infinity_bench.run(Recorder(str(path)), "tiny", [1], torch.device("cpu"), torch.bfloat16, Deadline(time.time() + 600),
                       1e10, None, reps=1)
    records = read_records(str(path))
    assert by(records, "infinity_check")[("fast", 2)]["status"] == "ok"
    got = by(records, "infinity")
    assert got[("fast", 1)]["status"] == "ok" and got[("reference", 1)]["status"] == "ok"
    assert got[("reference", 1)]["case"]["dtype"] == "bfloat16"
    assert [r["impl"] for r in records if r["section"] == "infinity"] == ["fast", "reference"]
    # the check on the float32 model in float32, the timing on the bf16 blocks in bf16
    assert FakeFastSampler.made == [(torch.float32, False, torch.float32), (torch.bfloat16, False, torch.bfloat16)]
    # memory.py's estimate of each backend's caches (the fast loop's: preallocated, bf16 keys, float32 text K/V)
    from var_fast.infinity.memory import per_image_bytes
    model, vae = infinity_models.build("tiny", "cpu")
    shapes = infinity_models.shapes(model, vae, "tiny")
    for impl, fast in (("fast", True), ("reference", False)):
        kv, act, _ = per_image_bytes(shapes, infinity_models.schedule("tiny"), "bfloat16", fast=fast)
        assert got[(impl, 1)]["estimated_gib"] == (kv + act) / 2 ** 30


@pytest.mark.skipif(importlib.util.find_spec(infinity_bench.FAST_MODULE) is None,
                    reason="this tree has no var_fast/infinity/fast_sampler.py")
def test_the_trees_fast_loop_passes_its_check_and_is_timed(tmp_path):
    records = run_child(tmp_path)
    check = by(records, "infinity_check")[("fast", 2)]
    assert check["status"] == "ok", check["reason"]
    got = by(records, "infinity")
    assert got[("fast", 1)]["status"] == "ok" and got[("fast", 2)]["status"] == "ok", got
    assert judge_benchmarks(records, 0)[0] == PASSED


def test_a_fast_loop_with_other_bits_is_refused_but_still_timed(tmp_path, fast_module):
    fast_module(FlippingFastSampler)
    records = run_child(tmp_path)
    check = by(records, "infinity_check")[("fast", 2)]
    assert check["status"] == "refused" and "first at scale 6" in check["reason"]
    assert by(records, "infinity")[("fast", 1)]["status"] == "ok"
    assert "fast greedy check refused" in infinity_stage.summary(records)


def test_a_fast_loop_that_raises_fails_the_stage(tmp_path, fast_module):
    fast_module(BrokenFastSampler)
    records = run_child(tmp_path)
    assert by(records, "infinity")[("fast", 1)]["error"] == "RuntimeError: kernel exploded"
    assert by(records, "infinity")[("reference", 1)]["status"] == "ok"  # the rest still runs
    status, detail = judge_benchmarks(records, 0)
    assert status == FAILED and "kernel exploded" in detail


def test_a_missing_upstream_checkout_is_refused_with_the_reason(tmp_path, fast_module):
    fast_module(None)
    records = run_child(tmp_path, "--upstream", str(tmp_path / "nowhere"))
    check = next(r for r in records if r["section"] == "infinity_check")
    assert check["impl"] == "upstream" and check["status"] == "refused"
    assert "is not a FoundationVision/Infinity checkout" in check["reason"]
    assert ("upstream", 1) not in by(records, "infinity")


@needs_upstream
def test_upstream_loop_is_checked_then_timed(tmp_path, fast_module):
    fast_module(None)
    records = run_child(tmp_path, "--upstream", CHECKOUT)
    check = by(records, "infinity_check")[("upstream", 2)]
    assert check["status"] == "ok" and check["differing"] == 0, check["reason"]
    got = by(records, "infinity")
    assert got[("upstream", 1)]["status"] == "ok" and got[("upstream", 2)]["status"] == "ok"


@needs_upstream
def test_upstream_holds_var_fast_tensors_before_and_after_the_blocks_go_to_bf16():
    from benchmarks.gpu_check.infinity_upstream_loop import InfinityUpstream
    from var_fast.infinity.api import half_precision_blocks
    model, vae = infinity_models.build("tiny", "cpu")
    up = InfinityUpstream(CHECKOUT)
    umodel, _ = up.build(model, vae, "0.06M")

    def shared():
        ours, theirs = model.state_dict(), umodel.state_dict()
        return {k for k in ours if theirs[k].data_ptr() == ours[k].data_ptr()}

    assert len(shared()) == len(model.state_dict()) - 1  # all but cfg_uncond (upstream's load_state_dict re-cats it)
    assert umodel.rng.device.type == "cpu"
    half_precision_blocks(model, torch.bfloat16)
    up.share(umodel, model, torch.bfloat16)
    assert "block_chunks.0.module.0.sa.mat_qkv.weight" in shared()
    # upstream's own block.bfloat16(): its norm weights bf16 (var_fast keeps them float32, rounded)
    norm = "block_chunks.0.module.0.ca_norm.weight"
    assert umodel.state_dict()[norm].dtype == torch.bfloat16 and model.state_dict()[norm].dtype == torch.float32
    assert torch.equal(umodel.state_dict()[norm].float(), model.state_dict()[norm])


# ---- the stage in gpu-check ---------------------------------------------------------------------------------------
def test_smoke_run_includes_the_infinity_stage_end_to_end(tmp_path, fast_module):
    fast_module(None)  # in this process only: the stage's child imports the tree as it is
    code = gpu_check.main(["--cpu-smoke", "--out", str(tmp_path), "--skip", "tests,benchmarks"])
    data = json.load(open(tmp_path / "report.json"))
    stages = {s["name"]: s for s in data["stages"]}
    assert code == 0 and stages["infinity"]["status"] == PASSED, stages["infinity"]
    assert stages["benchmarks"]["status"] == SKIPPED
    assert "--batches 1,2" in stages["infinity"]["command"] and "--cpu-smoke" in stages["infinity"]["command"]
    ref = [r for r in data["records"] if r.get("section") == "infinity" and r["impl"] == "reference"]
    assert [r["case"]["batch"] for r in ref] == [1, 2] and all(r["status"] == "ok" for r in ref)
    md = (tmp_path / "report.md").read_text()
    assert "Infinity (text to image), random weights with tiny's shapes" in md
    assert "==== infinity stage:" in (tmp_path / "benchmarks.log").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks.log", "report.json", "report.md"]


def test_rehearsal_runs_the_infinity_stage(tmp_path):
    code = gpu_check.main(["--rehearse", "clean", "--out", str(tmp_path), "--skip", "build,tests,sanitizers,benchmarks"])
    stages = {s["name"]: s for s in json.load(open(tmp_path / "report.json"))["stages"]}
    assert code == 0 and stages["infinity"]["status"] == PASSED, stages["infinity"]
    assert "REHEARSAL" in (tmp_path / "report.md").read_text()


def test_the_stage_command_carries_the_options():
    args = gpu_check.parser().parse_args(["--out", "x", "--infinity-upstream", "shared/infinity"])
    cmd = infinity_stage.command(args, "r.jsonl", 123.0, cpu=False, peak_flops=7.5e14)
    assert cmd[cmd.index("--batches") + 1] == "1,8" and "--cpu-smoke" not in cmd
    assert cmd[cmd.index("--upstream") + 1] == os.path.abspath("shared/infinity")
    assert float(cmd[cmd.index("--peak-flops") + 1]) == 7.5e14


# ---- report -----------------------------------------------------------------------------------------------------
def rec(section, impl, status="ok", batch=1, **fields):
    return dict(section=section, impl=impl, status=status,
                case=dict(model="infinity-2b", image="1024x1024", batch=batch, dtype="bfloat16"), **fields)


MODEL = dict(section="infinity_model", impl="build", status="ok", case=dict(model="infinity-2b", image="1024x1024",
             dtype="bfloat16"), params=2_204_564_032, flops_per_image=1.15e14, prompt_tokens=64,
             schedule=[[1, 1, 1], [1, 64, 64]], settings=dict(cfg=3.0, tau=1.0, top_k=900, top_p=0.97))


def test_report_shows_the_ratios_when_upstream_passed_its_check():
    records = [MODEL, dict(rec("infinity_check", "upstream"), reason="greedy tokens equal on all 10"),
               rec("infinity", "fast", latency_s=0.5, images_per_s=2.0, peak_memory_gib=9.0, estimated_gib=8.4,
                   floor_fraction=0.4),
               rec("infinity", "reference", latency_s=1.5, images_per_s=0.67, peak_memory_gib=10.0, estimated_gib=8.4),
               rec("infinity", "upstream", latency_s=2.0, images_per_s=0.5, peak_memory_gib=11.0, estimated_gib=8.4),
               rec("infinity", "reference", "out of memory", batch=8)]
    lines = infinity_section(records)
    text = "\n".join(lines)
    assert "2.2 B parameters" in text and "13 scales" not in text and "2 scales, 4,097 tokens" in text
    fast_row = next(line for line in lines if "| fast |" in line)
    assert "| 3.00x | 4.00x |" in fast_row  # vs reference, vs upstream
    assert "| 8 | reference | OOM |" in text
    assert "upstream against the reference sampler" in text and "passed" in text


def test_report_refuses_the_upstream_ratio_and_marks_a_missing_fast_loop():
    records = [MODEL, dict(rec("infinity_check", "upstream", "refused"), reason="greedy tokens differ: 3 of 10"),
               rec("infinity", "fast", "unavailable", reason="var_fast.infinity.fast_sampler is not in this tree"),
               rec("infinity", "reference", latency_s=1.5, images_per_s=0.67)]
    text = "\n".join(infinity_section(records))
    assert "| fast | not in this tree |" in text
    assert "Fast loop: var_fast.infinity.fast_sampler is not in this tree." in text
    assert "refused — greedy tokens differ: 3 of 10" in text


def test_report_has_no_infinity_section_without_its_records():
    assert infinity_section([]) == []
    env = dict(date="d", gpu="g", driver="1", torch="t", cuda="c", python="p", commit="x", cores=1)
    assert "Infinity" not in markdown(env, "cmd", [], [], 1.0, 2.0)


def test_upstream_imports_without_pytz_get_a_stand_in(monkeypatch):
    # the GPU machine's image has no pytz; upstream imports it for log timestamps only
    from benchmarks import infinity_upstream as iu
    real = importlib.util.find_spec
    monkeypatch.setattr(iu.importlib.util, "find_spec", lambda name, *a: None if name == "pytz" else real(name, *a))
    pytz = iu._stand_ins()["pytz"]
    with pytest.raises(RuntimeError, match="log timestamps are not supported"):
        pytz.timezone("Asia/Shanghai")
