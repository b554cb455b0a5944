"""The whole sampler (transformer, sampling, quantizer, VQVAE decoding) for random-weight models:
var_fast's fast backend, its reference backend under autocast and, with --upstream, upstream's own
``autoregressive_infer_cfg``, side by side at each batch size."""
from __future__ import annotations

import copy
import gc
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

import var_fast

from .clock import Deadline
from .flops import image_flops
from .random_models import build, configs
from .timing import measure
from .upstream import Verdict


FAST_FP32 = "fast float32"


class Estimator:
    """Predicts a run's seconds from the last measured run of the same backend at the same batch size
    (another model), scaled by FLOPs, so a case that cannot finish before the deadline is not started.
    Only the same batch size: batch 1 is bound by launches, not FLOPs, and would predict a batch-64
    run many times too slow (and leave the headline d30 batch 64 out)."""

    def __init__(self):
        self.seconds_per_flop: Dict[Tuple[str, int], float] = {}

    def update(self, backend: str, batch: int, flops: float, seconds: float) -> None:
        self.seconds_per_flop[(backend, batch)] = seconds / flops

    def predict(self, backend: str, batch: int, flops: float) -> Optional[float]:
        rate = self.seconds_per_flop.get((backend, batch))
        return None if rate is None else rate * flops


def sampling_settings(vocab_size: int) -> Dict:
    """VAR's demo settings; top-k capped for the smoke mode's tiny vocabulary (upstream needs k <= V)."""
    return dict(cfg=1.5, top_k=min(900, vocab_size // 2), top_p=0.96)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def per_scale_ms(sample: Callable[[Callable[[int, int], None]], object], device: torch.device) -> Dict[str, object]:
    """One call of ``sample(on_scale)``: milliseconds from the call's start to the end of scale 0, from
    there to the end of scale 1, ..., and from the last scale to the images (VQVAE decoding). On a GPU,
    CUDA events recorded by the on_scale callback: no wait is added inside the call."""
    cuda = device.type == "cuda"
    marks: List = []

    def mark():
        if cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            marks.append(e)
        else:
            marks.append(time.perf_counter())

    mark()
    sample(lambda si, S: mark())
    mark()
    if cuda:
        marks[-1].synchronize()
        gaps = [a.elapsed_time(b) for a, b in zip(marks, marks[1:])]
    else:
        gaps = [(b - a) * 1e3 for a, b in zip(marks, marks[1:])]
    return dict(scale_ms=gaps[:-1], after_last_scale_ms=gaps[-1])


def run_model(rec, name: str, batches: List[int], device: torch.device, dtype: torch.dtype, deadline: Deadline,
              estimator: Estimator, peak_flops: Optional[float], upstream=None, reps: int = 3,
              verdicts: Optional[Dict[str, Verdict]] = None) -> None:
    """The whole sampler of random-weight ``name`` at each batch size. ``verdicts`` keeps upstream's
    greedy check per model across calls (a model run in two steps of the plan is checked once)."""
    verdicts = {} if verdicts is None else verdicts
    var_cfg, vae_cfg = configs(name)
    flops = image_flops(var_cfg, vae_cfg)
    base = dict(model=name, image=vae_cfg.image_size, dtype=str(dtype).replace("torch.", ""))
    if deadline.passed():
        for batch in batches:
            rec.add("left_out", case=dict(base, batch=batch, section="sampler"), impl="-", status="deadline")
        return
    t = time.perf_counter()
    var, vae = build(name, device)
    _sync(device)
    settings = sampling_settings(var_cfg.vocab_size)
    rec.add("model", case=dict(base, params=sum(p.numel() for p in var.parameters())), impl="build",
            status="ok", seconds=time.perf_counter() - t, flops_per_image=flops, settings=settings)
    samplers, broken = {}, {}
    channels_last_vae = None
    for backend in ("fast", "reference"):
        try:
            samplers[backend] = var_fast.Sampler(var, vae, device=device, dtype=dtype, backend=backend)
            if backend == "fast":
                samplers[backend]._fast_sampler()  # its reduced-precision weight copy, resident before timing
        except Exception as err:  # e.g. the extension did not build: the baselines are still measured
            broken[backend] = f"{type(err).__name__}: {str(err)[:200]}"
    verdict, uvar = None, None
    if upstream is not None:
        verdict = verdicts.get(name)
        try:
            uvar, _ = upstream.build(var, vae)
            if verdict is None:
                ref32 = var_fast.Sampler(var, vae, device=device, dtype=torch.float32, backend="reference")
                verdict = upstream.greedy_check(uvar, ref32, torch.arange(2, device=device) % var_cfg.num_classes)
        except Exception as err:
            verdict = Verdict(False, f"upstream failed to build or run: {type(err).__name__}: {str(err)[:200]}")
        if name not in verdicts:
            verdicts[name] = verdict
            rec.add("upstream_check", case=dict(base), impl="upstream", status="ok" if verdict.ok else "refused",
                    reason=verdict.reason, differing=verdict.differing, total=verdict.total)
    for batch in batches:
        case = dict(base, batch=batch)
        labels = torch.arange(batch, device=device) % var_cfg.num_classes
        runs = {name_: (lambda s=s: s.sample(labels, seed=0, **settings)) for name_, s in samplers.items()}
        if batch == 1 and dtype != torch.float32 and "fast" in samplers:
            # what float32 costs: the fast backend at batch 1 with dtype=torch.float32 (not CUDA's default)
            fp32 = var_fast.Sampler(var, vae, device=device, dtype=torch.float32, backend="fast")
            runs[FAST_FP32] = lambda: fp32.sample(labels, seed=0, **settings)
        if uvar is not None and verdict is not None and verdict.ok:
            runs["upstream"] = lambda: upstream.sample(uvar, labels, dtype, **settings)
        for backend, why in broken.items():
            rec.add("sampler", case=case, impl=backend, status="error", error=why)
        for backend, fn in runs.items():
            predicted = estimator.predict(backend, batch, flops["total"] * batch)
            if deadline.passed() or (predicted is not None and not deadline.allows(2 * predicted)):
                rec.add("sampler", case=case, impl=backend, status="deadline", predicted_s=predicted)
                continue
            try:
                resident = 0
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    resident = torch.cuda.memory_allocated(device)  # every model's weights
                m = measure(fn, device.type, reps=reps, warmup=1, deadline=deadline)
                estimator.update(backend, batch, flops["total"] * batch, m["median_s"])
                out = dict(status="ok", latency_s=m["median_s"], runs=m["runs"], images_per_s=batch / m["median_s"])
                if device.type == "cuda":
                    out["peak_memory_gib"] = (torch.cuda.max_memory_allocated(device) - resident) / 2 ** 30
                if peak_flops:
                    out["floor_fraction"] = flops["total"] * batch / peak_flops / m["median_s"]
                rec.add("sampler", case=case, impl=backend, **out)
                if batch == 1 and backend in samplers and not deadline.passed():  # one more call, timed per scale
                    s = samplers[backend]
                    split = per_scale_ms(lambda cb, s=s: s.sample(labels, seed=0, on_scale=cb, **settings), device)
                    rec.add("scales", case=case, impl=backend, status="ok", **split)
            except torch.cuda.OutOfMemoryError:
                rec.add("sampler", case=case, impl=backend, status="out of memory")
            except Exception as err:
                rec.add("sampler", case=case, impl=backend, status="error", error=f"{type(err).__name__}: {str(err)[:200]}")
            _free(device)
        if not deadline.passed():
            f_hat = torch.randn(batch, var_cfg.Cvae, var_cfg.patch_nums[-1], var_cfg.patch_nums[-1], device=device)
            # the decoder as Sampler runs it (compute dtype, autocast), then in channels-last memory format:
            # Sampler(channels_last=True) stays off by default until this column says it is faster
            for impl, module, x in (("vqvae decoder", vae, f_hat), ("vqvae decoder, channels-last", None, None)):
                if impl.endswith("channels-last"):
                    if deadline.passed():
                        break
                    module = channels_last_vae = channels_last_vae or copy.deepcopy(vae).to(memory_format=torch.channels_last)
                    x = f_hat.contiguous(memory_format=torch.channels_last)
                try:
                    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                        d = measure(lambda: module.fhat_to_img(x), device.type, reps=reps, warmup=1, deadline=deadline)
                    rec.add("decode", case=case, impl=impl, status="ok", latency_s=d["median_s"], runs=d["runs"],
                            floor_fraction=(flops["decoder"] * batch / peak_flops / d["median_s"]) if peak_flops else None)
                except torch.cuda.OutOfMemoryError:
                    rec.add("decode", case=case, impl=impl, status="out of memory")
                except Exception as err:
                    rec.add("decode", case=case, impl=impl, status="error", error=f"{type(err).__name__}: {str(err)[:200]}")
            del f_hat, x
            _free(device)
    del samplers, var, vae, uvar, channels_last_vae
    _free(device)
