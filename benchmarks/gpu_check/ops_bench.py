"""Op benchmarks against their baselines, each case's implementations timed side by side:
the peak bf16 matmul rate, sampling, attention over the static KV cache, quantization."""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

from var_fast.models import PATCH_NUMS_256, PATCH_NUMS_512

from benchmarks.random_quantizer import random_quantizer

from .clock import Deadline
from .random_models import configs
from .timing import measure

TOP_K, TOP_P, GUIDANCE, V = 900, 0.96, 1.5, 4096
REPS = {"cuda": 20, "cpu": 5}  # timed calls per implementation (the CPU smoke mode only checks the code runs)


def _time_impls(rec, section: str, case: Dict, impls: Dict[str, Callable], device: str, deadline: Deadline) -> None:
    """One record per implementation of one case; an implementation that raises is recorded with its error."""
    for impl, fn in impls.items():
        if deadline.passed():
            rec.add(section, case=case, impl=impl, status="deadline")
            continue
        try:
            m = measure(fn, device, reps=REPS.get(device, 20), warmup=3 if device == "cuda" else 1, deadline=deadline)
            rec.add(section, case=case, impl=impl, status="ok", median_ms=m["median_s"] * 1e3, runs=m["runs"])
        except Exception as err:  # a backend that does not support the shape, out of memory, ...
            rec.add(section, case=case, impl=impl, status="error", error=f"{type(err).__name__}: {str(err)[:200]}")
        finally:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()


def left_out(rec, section: str, case: Dict) -> None:
    """A case the time budget left out, listed as such in the report."""
    rec.add("left_out", case=dict(case, section=section), impl="-", status="deadline")


# ---- peak matmul rate (the FLOP floor's denominator) -----------------------------------------------------
def peak_matmul(rec, device: str, deadline: Deadline, n: int, dtype=torch.bfloat16) -> float:
    """n x n x n products on random data (never zeros: they run faster); FLOP/s of the median."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, device=device, generator=g).to(dtype)
    m = measure(lambda: a @ b, device, reps=REPS.get(device, 20), warmup=3, deadline=deadline)
    rate = 2 * n ** 3 / m["median_s"]
    rec.add("peak", case=dict(n=n, dtype=str(dtype).replace("torch.", "")), impl="torch.matmul", status="ok", median_ms=m["median_s"] * 1e3,
            runs=m["runs"], flops_per_s=rate)
    return rate


# ---- sampling ----------------------------------------------------------------------------------------------
def _flashinfer():
    try:
        from flashinfer.sampling import top_k_top_p_sampling_from_logits
        return top_k_top_p_sampling_from_logits
    except Exception:
        return None


def sampling(rec, device: str, deadline: Deadline, rows_list: List[int]) -> None:
    from benchmarks.bench_sampling import torch_topk_sample
    from var_fast import ops
    from var_fast.reference.sampling import cfg_mix, sample_top_k_top_p_
    flashinfer = _flashinfer() if device.startswith("cuda") else None
    rng = torch.Generator(device=device).manual_seed(0)
    for cfg in (False, True):
        for rows in rows_list:
            if deadline.passed():
                left_out(rec, "sampling", dict(op="sample_cfg_top_k_top_p" if cfg else "sample_top_k_top_p", rows=rows))
                continue
            n_in = 2 * rows if cfg else rows  # CFG: the doubled batch in, one token per image row out
            logits = torch.randn(1, n_in, V, device=device, generator=rng) * 3
            mix = (lambda x: cfg_mix(x.view(2, rows, V), GUIDANCE).view(1, rows, V)) if cfg else (lambda x: x)
            # with a status word, as the fast sampler calls them: without one the op reads its row
            # checks back on the host, a wait inside the timed region
            status = ops.new_status(device)
            impls = {
                "var_fast": (lambda: ops.sample_cfg_top_k_top_p(logits.view(2, rows, V), GUIDANCE, TOP_K, TOP_P, 1,
                                                                status=status))
                if cfg else (lambda: ops.sample_top_k_top_p(logits, TOP_K, TOP_P, 1, status=status)),
                "reference sort": lambda: sample_top_k_top_p_(mix(logits).clone(), TOP_K, TOP_P, rng=rng),
                "torch.topk": lambda: torch_topk_sample(mix(logits), TOP_K, TOP_P, rng),
            }
            if flashinfer is not None:
                impls["flashinfer"] = lambda: flashinfer(mix(logits).view(rows, V), TOP_K, TOP_P)
            case = dict(op="sample_cfg_top_k_top_p" if cfg else "sample_top_k_top_p", rows=rows, V=V)
            _time_impls(rec, "sampling", case, impls, device, deadline)
            del logits


# ---- attention over the static KV cache --------------------------------------------------------------------------
def attention_shapes(models: List[str], batch: int) -> List[Dict]:
    """(model, scale) cases: the CFG-doubled batch's queries of one scale over the cached keys so far."""
    shapes = []
    for name in models:
        cfg, _ = configs(name)
        H, c, kv = cfg.num_heads, cfg.embed_dim // cfg.num_heads, 0
        for si, pn in enumerate(cfg.patch_nums):
            kv += pn * pn
            shapes.append(dict(model=name, scale=si, B=2 * batch, H=H, L=pn * pn, kv=kv, Lmax=cfg.L, c=c))
    return shapes


def _sdpa_backends() -> Dict[str, object]:
    from torch.nn.attention import SDPBackend
    return {"sdpa flash": SDPBackend.FLASH_ATTENTION, "sdpa cudnn": SDPBackend.CUDNN_ATTENTION,
            "sdpa efficient": SDPBackend.EFFICIENT_ATTENTION, "sdpa math": SDPBackend.MATH}


def attention(rec, device: str, deadline: Deadline, shapes: List[Dict], dtype=torch.bfloat16) -> None:
    """var_fast's cached_attention against torch SDPA forced onto each of its backends (and
    flash-attn / xformers when they import) on views of the same cache; SDPA's (B, H, L, c) output
    is not reshaped to the op's (B, L, H*c), which favours SDPA slightly."""
    from torch.nn.attention import sdpa_kernel
    from var_fast import ops
    extra: Dict[str, Callable] = {}
    try:
        from flash_attn import flash_attn_func
        extra["flash-attn"] = lambda q, k, v, s: flash_attn_func(q.transpose(1, 2), k.transpose(1, 2),
                                                                 v.transpose(1, 2), softmax_scale=s)
    except Exception:
        pass
    try:
        from xformers.ops import memory_efficient_attention
        extra["xformers"] = lambda q, k, v, s: memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                                          v.transpose(1, 2), scale=s)
    except Exception:
        pass
    g = torch.Generator(device=device).manual_seed(0)
    for shape in shapes:
        if deadline.passed():
            left_out(rec, "attention", dict(model=shape["model"], scale=shape["scale"]))
            continue
        B, H, L, kv, Lmax, c = (shape[k] for k in ("B", "H", "L", "kv", "Lmax", "c"))
        q = torch.randn(B, H, L, c, device=device, generator=g).to(dtype)
        k_cache = torch.randn(B, H, Lmax, c, device=device, generator=g).to(dtype)
        v_cache = torch.randn(B, H, Lmax, c, device=device, generator=g).to(dtype)
        k, v = k_cache[:, :, :kv], v_cache[:, :, :kv]  # views of the cache, as the sampler would pass them
        scale = c ** -0.5
        impls = {"var_fast": lambda: ops.cached_attention(q, k_cache, v_cache, kv, scale)}
        for name, backend in _sdpa_backends().items():
            impls[name] = lambda b=backend: _with(sdpa_kernel(b), lambda: F.scaled_dot_product_attention(q, k, v, scale=scale))
        for name, fn in extra.items():
            impls[name] = lambda fn=fn: fn(q, k, v, scale)
        _time_impls(rec, "attention", dict(shape, dtype=str(dtype).replace("torch.", "")), impls, device, deadline)


def _with(ctx, fn):
    with ctx:
        return fn()


# ---- quantization ------------------------------------------------------------------------------------------------
def quantization(rec, device: str, deadline: Deadline, setups: List[Tuple[int, str]]) -> None:
    from var_fast import ops
    patch_sets = {"256px": tuple(PATCH_NUMS_256), "512px": tuple(PATCH_NUMS_512)}
    for batch, size in setups:
        if deadline.passed():
            left_out(rec, "quantization", dict(batch=batch, size=size))
            continue
        patch_nums = patch_sets[size]
        q, weights, biases, index = random_quantizer(device, patch_nums, V)
        codebook = q.embedding.weight.detach()
        C, H, S = codebook.shape[1], patch_nums[-1], len(patch_nums)
        f = torch.randn(batch, C, H, H, device=device)
        encode = {"var_fast": lambda: ops.quant_encode(f, codebook, weights, biases, index, 0.5, patch_nums),
                  "reference": torch.no_grad()(lambda: q.f_to_idx(f))}
        _time_impls(rec, "quantization", dict(op="quant_encode", batch=batch, size=size), encode, device, deadline)
        tokens = [torch.randint(0, V, (batch, pn * pn), device=device) for pn in patch_nums]
        f_hat = torch.zeros(batch, C, H, H, device=device)

        status = ops.new_status(device)

        def steps_op():  # with a status word, as the fast sampler: without one each step syncs on the host
            for si in range(S):
                nxt = patch_nums[si + 1] if si + 1 < S else 0
                ops.quant_sampler_step(tokens[si], codebook, f_hat, weights[index[si]], biases[index[si]], 0.5, nxt,
                                       status=status)

        @torch.no_grad()
        def steps_reference():
            fh = f_hat
            for si, pn in enumerate(patch_nums):  # as the reference sampler: embed, then the quantizer's update
                h = q.embedding(tokens[si]).transpose_(1, 2).reshape(batch, C, pn, pn)
                fh, _ = q.next_autoregressive_input(si, fh, h)

        _time_impls(rec, "quantization", dict(op=f"quant_sampler_step x{S} scales", batch=batch, size=size),
                    {"var_fast": steps_op, "reference": steps_reference}, device, deadline)

