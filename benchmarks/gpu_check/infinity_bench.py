"""The Infinity stage, in its own process: Infinity's sampling loop on a random-weight model with Infinity-2B's
shapes, 1M pixels (the 1:1 schedule, 13 scales up to 64 x 64 = 1024 x 1024 px), a random prompt of
``PROMPT_TOKENS`` T5 features, run_infinity's settings (cfg 3 on the logits with the learned unconditional
embedding, tau 1, top_k 900, top_p 0.97, seed 0), bfloat16 as upstream runs it (the blocks' weights in bf16,
autocast), the loop without the VAE decode, at each batch size:

- ``fast``: var_fast.infinity.fast_sampler.InfinityFastSampler (CUDA graphs on a GPU), when this tree has it;
  without that module the rows say "not in this tree" (nothing is timed in its place);
- ``reference``: var_fast.infinity.reference_sampler.infer_reference (upstream's algorithm on stock PyTorch);
- ``upstream``: FoundationVision/Infinity's own autoregressive_infer_cfg from a checkout (``--upstream DIR``;
  gpu_check/infinity_upstream_loop.py says how it runs without flash-attn), timed only when its greedy bits
  equal the reference's on the same weights (float32, the 0.06M schedule, 2 prompts).

Per case: median latency of the timed calls (CUDA events after a warm-up call), images/s, the peak memory over
the models' weights (torch.cuda.max_memory_allocated over the backend's setup, warm-up and timed calls, minus
what was allocated before: KV caches, activations, graph pools, copies it makes), var_fast.infinity.memory's
estimate of the same, and the FLOP-floor fraction (flops.infinity_flops per image x batch / the measured peak
matmul rate / latency). The fast loop's greedy bits are checked against the reference's first (float32, 0.06M).

    python -m benchmarks.gpu_check.infinity_bench --records FILE --deadline EPOCH_S [--cpu-smoke] [--batches 1,8]
        [--upstream DIR] [--peak-flops FLOP_PER_S]

--cpu-smoke: the "tiny" model on the CPU in float32 at 0.06M (the rehearsal's and CI's run of this code).
"""
from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

from var_fast.infinity import infer_reference
from var_fast.infinity.memory import per_image_bytes
from var_fast.infinity.sampling_args import CFG, TAU, TOP_K, TOP_P

from . import infinity_models
from .clock import Deadline
from .flops import infinity_image_flops
from .run_benchmarks import Recorder
from .timing import measure
from .upstream import Verdict, compare_tokens

FAST_MODULE = "var_fast.infinity.fast_sampler"
FAST, REFERENCE, UPSTREAM = "fast", "reference", "upstream"
SETTINGS = dict(cfg=CFG, tau=TAU, top_k=TOP_K, top_p=TOP_P)  # tools/run_infinity.py's defaults
CHECK_BATCH = 2
GiB = 2 ** 30


def fast_backend() -> Tuple[Optional[type], str]:
    """(InfinityFastSampler, "") or (None, why) when this tree has no var_fast/infinity/fast_sampler.py. Any
    other failure to import it raises: a broken fast sampler is an error of var_fast's, not a missing one."""
    if importlib.util.find_spec(FAST_MODULE) is None:
        return None, f"{FAST_MODULE} is not in this tree: the fast loop is not measured"
    return importlib.import_module(FAST_MODULE).InfinityFastSampler, ""


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err)[:200]}"


class Runner:
    """One model's cases: each backend at each batch size, timed and recorded."""

    def __init__(self, rec, name: str, device: torch.device, dtype: torch.dtype, deadline: Deadline,
                 peak_flops: Optional[float], reps: int):
        self.rec, self.name, self.device, self.dtype, self.deadline = rec, name, device, dtype, deadline
        self.peak_flops, self.reps = peak_flops, reps
        self.model, self.vae = infinity_models.build(name, device)
        cfg = self.model.cfg
        self.schedule = infinity_models.schedule(name)
        self.check_schedule = infinity_models.schedule(name, infinity_models.CHECK_PIXELS)
        self.flops = infinity_image_flops(cfg, self.schedule, infinity_models.PROMPT_TOKENS)
        dtype_name = str(dtype).replace("torch.", "")
        shapes = infinity_models.shapes(self.model, self.vae, name)
        # backend -> var_fast.infinity.memory's estimate of one image's KV cache and activations
        self.estimate_per_image = {impl: sum(per_image_bytes(shapes, self.schedule, dtype_name, fast=impl == FAST)[:2])
                                   for impl in (FAST, REFERENCE, UPSTREAM)}
        _, h, w = self.schedule[-1]
        self.base = dict(model=name, image=f"{16 * h}x{16 * w}", dtype=dtype_name)
        self.last: Dict[str, Tuple[int, float]] = {}  # backend -> (batch, seconds) of its last measurement
        self.check_cond = self.cond(CHECK_BATCH)
        self._reference_bits: Optional[List[torch.Tensor]] = None

    def cond(self, batch: int):
        return infinity_models.text_condition(batch, self.model.cfg.text_channels, self.device)

    # ---- the checks, in float32 on the short schedule ----------------------------------------------------------
    def reference_bits(self) -> List[torch.Tensor]:
        if self._reference_bits is None:
            self._reference_bits = infer_reference(self.model, self.vae, self.check_cond, self.check_schedule,
                                                   cfg_list=SETTINGS["cfg"], tau_list=1.0, top_k=1, top_p=0.0, seed=0,
                                                   decode=False).bits
        return self._reference_bits

    def check(self, impl: str, bits_of: Callable) -> Verdict:
        """``bits_of(cond)``: a backend's greedy bits per scale (float32, the short schedule); compared with the
        reference's, recorded."""
        try:
            with torch.no_grad():
                verdict = compare_tokens(self.reference_bits(), bits_of(self.check_cond))
        except Exception as err:
            verdict = Verdict(False, f"the check raised: {_error(err)}")
        self.rec.add("infinity_check", case=dict(self.base, dtype="float32", pixels=infinity_models.CHECK_PIXELS,
                                                 batch=CHECK_BATCH), impl=impl,
                     status="ok" if verdict.ok else "refused", reason=verdict.reason, differing=verdict.differing,
                     total=verdict.total)
        return verdict

    # ---- timing ---------------------------------------------------------------------------------------------
    def predicted(self, impl: str, batch: int) -> Optional[float]:
        """This backend's last time scaled linearly to ``batch`` (more images never cost less)."""
        if impl not in self.last:
            return None
        b0, s0 = self.last[impl]
        return s0 * max(1.0, batch / b0)

    def time(self, impl: str, batch: int, setup: Callable[[], Callable[[], object]]) -> None:
        """``setup()`` returns the call to time (its allocations count in the peak memory)."""
        case = dict(self.base, batch=batch)
        predicted = self.predicted(impl, batch)
        if self.deadline.passed() or (predicted is not None and not self.deadline.allows(2 * predicted)):
            self.rec.add("infinity", case=case, impl=impl, status="deadline", predicted_s=predicted)
            return
        cuda = self.device.type == "cuda"
        try:
            resident = 0
            if cuda:
                torch.cuda.synchronize(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
                resident = torch.cuda.memory_allocated(self.device)
            fn = setup()
            with torch.no_grad():
                m = measure(fn, self.device.type, reps=self.reps, warmup=1, deadline=self.deadline)
            del fn
            self.last[impl] = (batch, m["median_s"])
            out = dict(status="ok", latency_s=m["median_s"], runs=m["runs"], images_per_s=batch / m["median_s"],
                       estimated_gib=batch * self.estimate_per_image[impl] / GiB)
            if cuda:
                out["resident_gib"] = resident / GiB
                out["peak_memory_gib"] = (torch.cuda.max_memory_allocated(self.device) - resident) / GiB
            if self.peak_flops:
                out["floor_fraction"] = self.flops * batch / self.peak_flops / m["median_s"]
            self.rec.add("infinity", case=case, impl=impl, **out)
        except torch.cuda.OutOfMemoryError:
            self.rec.add("infinity", case=case, impl=impl, status="out of memory")
        except Exception as err:
            self.rec.add("infinity", case=case, impl=impl, status="error", error=_error(err))
        _free(self.device)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)


def run(rec, name: str, batches: List[int], device: torch.device, dtype: torch.dtype, deadline: Deadline,
        peak_flops: Optional[float], upstream_root: Optional[str] = None, reps: int = 3) -> None:
    """Every case of the stage, in the order: setup and the float32 checks, the blocks to ``dtype``, then per
    batch size the fast, reference and upstream loops."""
    if deadline.passed():
        for batch in batches:
            rec.add("left_out", case=dict(model=name, batch=batch, section="infinity"), impl="-", status="deadline")
        return
    t = time.perf_counter()
    r = Runner(rec, name, device, dtype, deadline, peak_flops, reps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rec.add("infinity_model", case=dict(r.base), impl="build", status="ok", seconds=time.perf_counter() - t,
            params=sum(p.numel() for p in r.model.parameters()), flops_per_image=r.flops,
            schedule=[list(s) for s in r.schedule], prompt_tokens=infinity_models.PROMPT_TOKENS, settings=SETTINGS)

    fast_cls, why = None, ""
    try:
        fast_cls, why = fast_backend()
    except Exception as err:  # the module is there but does not import: var_fast's error
        for batch in batches:
            rec.add("infinity", case=dict(r.base, batch=batch), impl=FAST, status="error", error=_error(err))
    if fast_cls is None and why:
        for batch in batches:
            rec.add("infinity", case=dict(r.base, batch=batch), impl=FAST, status="unavailable", reason=why)
    cuda_graphs = device.type == "cuda"
    if fast_cls is not None:
        def fast_bits(cond):
            sampler = fast_cls(r.model, r.vae, dtype=torch.float32, cuda_graphs=cuda_graphs)
            return sampler.sample(cond, r.check_schedule, cfg_list=SETTINGS["cfg"], tau_list=1.0, top_k=1, top_p=0.0,
                                  seed=0, decode=False).bits
        r.check(FAST, fast_bits)
        _free(device)

    upstream, umodel, uvae, verdict = None, None, None, None
    if upstream_root:
        try:
            from .infinity_upstream_loop import InfinityUpstream
            upstream = InfinityUpstream(upstream_root)
            umodel, uvae = upstream.build(r.model, r.vae, infinity_models.PIXELS[name])
        except Exception as err:
            upstream = None
            rec.add("infinity_check", case=dict(r.base), impl=UPSTREAM, status="refused",
                    reason=f"cannot build upstream Infinity from {upstream_root}: {_error(err)}")
        if upstream is not None:
            verdict = r.check(UPSTREAM, lambda cond: upstream.sample(umodel, uvae, cond, r.check_schedule, torch.float32,
                                                                     dict(SETTINGS, tau=1.0, top_k=1, top_p=0.0)).bits)

    if dtype != torch.float32:  # upstream's bf16=1: the blocks' weights in bf16, the rest float32, autocast
        from var_fast.infinity.api import half_precision_blocks
        half_precision_blocks(r.model, dtype)
        if umodel is not None:
            upstream.share(umodel, r.model, dtype)
        _free(device)

    for batch in batches:
        cond = r.cond(batch)
        if fast_cls is not None:  # on the model as var_fast.load(..., backend="fast") holds it: bf16 blocks
            def fast_setup(cond=cond):
                sampler = fast_cls(r.model, r.vae, dtype=dtype, cuda_graphs=cuda_graphs)
                return lambda: sampler.sample(cond, r.schedule, cfg_list=SETTINGS["cfg"], tau_list=SETTINGS["tau"],
                                              top_k=SETTINGS["top_k"], top_p=SETTINGS["top_p"], seed=0, decode=False)
            r.time(FAST, batch, fast_setup)

        def reference(cond=cond):
            with r.autocast():
                return infer_reference(r.model, r.vae, cond, r.schedule, cfg_list=SETTINGS["cfg"],
                                       tau_list=SETTINGS["tau"], top_k=SETTINGS["top_k"], top_p=SETTINGS["top_p"],
                                       seed=0, decode=False)
        r.time(REFERENCE, batch, lambda fn=reference: fn)
        if verdict is not None and verdict.ok:
            r.time(UPSTREAM, batch, lambda cond=cond: lambda: upstream.sample(umodel, uvae, cond, r.schedule, dtype, SETTINGS))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", required=True, help="JSON-lines file the measurements are appended to")
    p.add_argument("--deadline", type=float, required=True, help="epoch seconds at which to stop starting cases")
    p.add_argument("--cpu-smoke", action="store_true", help="the tiny model on the CPU in float32")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--upstream", default=None, help="a FoundationVision/Infinity checkout (commit 4c27bbb)")
    p.add_argument("--peak-flops", type=float, default=None,
                   help="the peak matmul rate measured by the benchmarks stage (FLOP/s); measured here when absent")
    a = p.parse_args(argv)
    smoke = a.cpu_smoke
    device = torch.device("cpu" if smoke else "cuda")
    dtype = torch.float32 if smoke else torch.bfloat16
    name = "tiny" if smoke else "infinity-2b"
    batches = [int(b) for b in a.batches.split(",") if b]
    deadline = Deadline(a.deadline)
    rec = Recorder(a.records)
    rec.add("plan", case={}, impl="-", status="ok", steps=[["infinity", name, batches]])
    peak = a.peak_flops
    if not peak:
        from .ops_bench import peak_matmul
        peak = peak_matmul(rec, device.type, deadline, n=256 if smoke else 8192, dtype=dtype)
    run(rec, name, batches, device, dtype, deadline, peak, a.upstream, reps=1 if smoke else 3)
    rec.add("done", case={}, impl="-", status="ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
