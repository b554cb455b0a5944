"""The report: markdown in the format of benchmarks/RESULTS.md (date, machine, commit, exact command,
then tables) and the same data as JSON, written with whatever stages finished."""
from __future__ import annotations

import json
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .upstream import Verdict, ratio_or_refusal

MISSING = "—"
STATUS_CELL = {"deadline": "out of time", "error": "error", "out of memory": "OOM", "refused": "refused",
               "unavailable": "not in this tree"}


def fmt(value: Optional[float], digits: int = 3) -> str:
    """Significant digits without exponent noise: 0.0463, 13.3, 1,175."""
    if value is None:
        return MISSING
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 else f"{value:.2e}"


def cell(record: Optional[Dict], field: str, digits: int = 3) -> str:
    if record is None:
        return MISSING
    if record.get("status") != "ok":
        return STATUS_CELL.get(record.get("status"), str(record.get("status")))
    return fmt(record.get(field), digits)


_NUMBER = re.compile(r"^[\d.,x×—e+-]*$")


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    """A markdown table; columns holding only numbers (or —) are right-aligned."""
    rows = [[str(c) for c in row] for row in rows]
    numeric = [all(_NUMBER.match(row[i]) for row in rows) for i in range(len(header))]
    align = ["---:" if n else "---" for n in numeric]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def pivot(records: List[Dict], section: str, keys: Sequence[str]) -> Tuple[List[Tuple], Dict[Tuple, Dict[str, Dict]], List[str]]:
    """Case keys in first-seen order, {case key: {impl: record}}, and the implementations in first-seen order."""
    order, cases, impls = [], {}, []
    for r in records:
        if r.get("section") != section:
            continue
        key = tuple(r.get("case", {}).get(k) for k in keys)
        if key not in cases:
            order.append(key)
            cases[key] = {}
        cases[key][r["impl"]] = r
        if r["impl"] not in impls:
            impls.append(r["impl"])
    return order, cases, impls


def speedup(ours: Optional[Dict], other: Optional[Dict], field: str = "median_ms") -> str:
    if not ours or not other or ours.get("status") != "ok" or other.get("status") != "ok":
        return MISSING
    return f"{other[field] / ours[field]:.2f}x"


def fastest(impls: Dict[str, Dict], field: str = "median_ms") -> str:
    done = {k: r[field] for k, r in impls.items() if r.get("status") == "ok" and r.get(field)}
    return min(done, key=done.get) if done else MISSING


# ---- sections --------------------------------------------------------------------------------------------------
def stages_section(stages: List[Dict], total_s: float, budget_s: float) -> List[str]:
    rows = [(s["name"], s["status"], f"{s['seconds']:.1f}", fmt(s.get("budget_s"), 3) if s.get("budget_s") else MISSING,
             s.get("detail", "").replace("|", "/")) for s in stages]
    rows.append(("total", "", f"{total_s:.1f}", f"{budget_s:.0f}", ""))
    lines = ["Stages (seconds measured by the script; a stage that ran out of its budget was stopped there):", ""]
    lines += table(["stage", "status", "seconds", "budget (s)", "detail"], rows)
    for s in stages:
        if s.get("output_tail"):
            lines += ["", f"`{s['name']}` output (last lines):", ""] + ["    " + line for line in s["output_tail"]]
    return lines


def peak_section(records: List[Dict]) -> List[str]:
    peak = next((r for r in records if r.get("section") == "peak" and r.get("status") == "ok"), None)
    if peak is None:
        return ["Peak matmul rate: not measured (no FLOP-floor fractions below)."]
    n, dtype = peak["case"]["n"], peak["case"]["dtype"]
    return [f"Peak matmul rate, measured in this run ({dtype} {n}×{n}×{n} on random data, median of "
            f"{peak['runs']}): **{peak['flops_per_s'] / 1e12:.3g} TFLOP/s**; the FLOP-floor fractions below divide by it."]


def sampling_section(records: List[Dict]) -> List[str]:
    order, cases, impls = pivot(records, "sampling", ("op", "rows", "V"))
    if not order:
        return []
    baselines = [i for i in impls if i != "var_fast"]
    rows = []
    for key in order:
        got = cases[key]
        best = min((got[b] for b in baselines if got.get(b, {}).get("status") == "ok"),
                   key=lambda r: r["median_ms"], default=None)
        rows.append([key[0], f"{key[1]:,}"] + [cell(got.get(i), "median_ms") for i in impls]
                    + [speedup(got.get("var_fast"), best)])
    return (["Sampling, V = 4096, top_k = 900, top_p = 0.96, float32 logits; median ms (CFG rows: tokens drawn, "
             "from twice as many logit rows, g = 1.5):", ""]
            + table(["op", "rows"] + impls + ["var_fast vs best baseline"], rows))


def attention_section(records: List[Dict]) -> List[str]:
    order, cases, impls = pivot(records, "attention", ("model", "scale", "B", "H", "L", "kv", "c", "dtype"))
    if not order:
        return []
    rows = [[k[0], k[1], f"{k[2]}×{k[3]}", k[4], k[5], k[6]] + [cell(cases[k].get(i), "median_ms") for i in impls]
            + [fastest(cases[k])] for k in order]
    dtype = order[0][7]
    return ([f"Attention over the static KV cache ({dtype}): one scale's queries over the cached keys so far, "
             "CFG-doubled batch; median ms:", ""]
            + table(["model", "scale", "B×H", "queries", "keys", "head dim"] + impls + ["fastest"], rows))


def quant_section(records: List[Dict]) -> List[str]:
    order, cases, impls = pivot(records, "quantization", ("op", "batch", "size"))
    if not order:
        return []
    rows = [[k[0], k[1], k[2]] + [cell(cases[k].get(i), "median_ms") for i in impls]
            + [speedup(cases[k].get("var_fast"), cases[k].get("reference"))] for k in order]
    return (["Quantization (V = 4096 codes of 32, four shared Phi layers); median ms:", ""]
            + table(["op", "batch", "size"] + impls + ["var_fast vs reference"], rows))


def sampler_section(records: List[Dict]) -> List[str]:
    order, cases, _ = pivot(records, "sampler", ("model", "image", "batch", "dtype"))
    if not order:
        return []
    decode = pivot(records, "decode", ("model", "image", "batch", "dtype"))[1]
    verdicts = {r["case"].get("model"): Verdict(r["status"] == "ok", r.get("reason", ""))
                for r in records if r.get("section") == "upstream_check"}
    rows = []
    for key in order:
        got = cases[key]
        ref, up = got.get("reference"), got.get("upstream")
        dec = decode.get(key, {}).get("vqvae decoder")
        dec_cl = decode.get(key, {}).get("vqvae decoder, channels-last")
        for backend in ("fast", "fast float32", "reference", "upstream"):
            r = got.get(backend)
            if r is None:
                continue
            vs_ref = speedup(r, ref, "latency_s") if backend != "reference" else MISSING
            vs_up = MISSING
            if backend == "fast":
                vs_up = ratio_or_refusal(r.get("latency_s") if r.get("status") == "ok" else None,
                                         up.get("latency_s") if up and up.get("status") == "ok" else None,
                                         verdicts.get(key[0]))
            rows.append([key[0], f"{key[1]} px", key[2], backend, cell(r, "latency_s", 4), cell(r, "images_per_s", 4),
                         cell(r, "peak_memory_gib"), cell(dec, "latency_s", 3), cell(dec_cl, "latency_s", 3),
                         cell(r, "floor_fraction", 2),
                         vs_ref, vs_up])
    settings = next((r.get("settings") for r in records if r.get("section") == "model" and r.get("settings")), {})
    drawn = ", ".join(f"{k} {v}" for k, v in settings.items())
    lines = [f"Whole sampler ({order[0][3]}), random weights, {drawn}, VQVAE decoding included; median of the "
             "timed runs:", ""]
    lines += table(["model", "image", "batch", "backend", "latency (s)", "images/s", "peak memory over weights (GiB)",
                    "decode (s)", "decode channels-last (s)", "FLOP-floor fraction", "speed-up vs reference", "fast vs upstream"], rows)
    for model, v in verdicts.items():
        lines.append(f"\nUpstream check for {model}: {'passed' if v.ok else 'refused'} — {v.reason}.")
    return lines


def collab_section(records: List[Dict]) -> List[str]:
    """CoDe (collaborative decoding): each pair's N against its drafter alone at the same batch size and,
    with ``--code``, var_fast's pair (decode included) against CoDe's own code."""
    got = [r for r in records if r.get("section") == "collab" and r.get("case", {}).get("batch") is not None]
    if not got:
        return []
    by_key = {(r["case"]["pair"], r["case"]["batch"], r["case"]["draft_steps"], r["impl"]): r for r in got}
    rows = []
    for r in got:
        c, impl = r["case"], r["impl"]
        vs = MISSING
        if impl == "fast" and c["draft_steps"] != "drafter alone":
            vs = speedup(r, by_key.get((c["pair"], c["batch"], "drafter alone", "fast")), "latency_s") + " vs drafter alone"
        elif impl == "fast, decode included":
            vs = speedup(r, by_key.get((c["pair"], c["batch"], c["draft_steps"], "CoDe (its code)")), "latency_s") + \
                " vs CoDe's code"
        rows.append([c["pair"], c["batch"], c["draft_steps"], impl, c.get("dtype", MISSING), cell(r, "latency_s", 4),
                     cell(r, "images_per_s", 4), cell(r, "peak_memory_gib"), vs])
    lines = ["Collaborative decoding (CoDe): random-weight drafter+refiner, cfg 4, top-k 600, top-p 0.95, temperature "
             "1.1 on the first 7 scales; \"fast\": the transformer loop with sampling, VQVAE decode not timed (as "
             "CoDe's README times it); median:", ""]
    lines += table(["pair", "batch", "drafted scales (N)", "implementation", "dtype", "latency (s)", "images/s",
                    "peak memory over weights (GiB)", "speed-up"], rows)
    for r in records:
        if r.get("section") == "code_check":
            n = r.get("case", {}).get("draft_steps")
            lines.append(f"\nCoDe's code, N = {n}: {'compared' if r['status'] == 'ok' else 'refused'} — {r.get('reason')}.")
    return lines


def infinity_section(records: List[Dict]) -> List[str]:
    """The Infinity stage (benchmarks/gpu_check/infinity_bench.py): each backend's loop at each batch size, the
    fast loop's and upstream's greedy checks."""
    order, cases, _ = pivot(records, "infinity", ("model", "image", "batch", "dtype"))
    model = next((r for r in records if r.get("section") == "infinity_model" and r.get("status") == "ok"), None)
    checks = {r["impl"]: r for r in records if r.get("section") == "infinity_check"}
    if not order and model is None:
        return []
    upstream_check = checks.get("upstream")
    verdict = None if upstream_check is None else Verdict(upstream_check["status"] == "ok", upstream_check.get("reason", ""))
    rows = []
    for key in order:
        got = cases[key]
        ref, up = got.get("reference"), got.get("upstream")
        for backend in ("fast", "reference", "upstream"):
            r = got.get(backend)
            if r is None:
                continue
            vs_ref = speedup(r, ref, "latency_s") if backend != "reference" else MISSING
            vs_up = MISSING
            if backend == "fast" and r.get("status") != "unavailable":
                vs_up = ratio_or_refusal(r.get("latency_s") if r.get("status") == "ok" else None,
                                         up.get("latency_s") if up and up.get("status") == "ok" else None, verdict)
            rows.append([key[0], key[1], key[2], backend, cell(r, "latency_s", 4), cell(r, "images_per_s", 4),
                         cell(r, "resident_gib"), cell(r, "peak_memory_gib"), cell(r, "estimated_gib"),
                         cell(r, "floor_fraction", 2), vs_ref, vs_up])
    lines = []
    if model is not None:
        c, s = model["case"], model.get("settings", {})
        sched = model.get("schedule", [])
        tokens = sum(h * w for _, h, w in sched)
        params = model["params"]
        size = f"{params / 1e9:.3g} B" if params >= 1e8 else f"{params:,}"
        dtype = c["dtype"] if c["dtype"] == "float32" else \
            f"{c['dtype']} (the blocks' weights in {c['dtype']}, the rest float32, autocast: upstream's bf16=1)"
        lines += [f"Infinity (text to image), random weights with {c['model']}'s shapes ({size} parameters), "
                  f"{c['image']} px ({len(sched)} scales, {tokens:,} tokens), a random prompt of "
                  f"{model.get('prompt_tokens')} T5 features, cfg {s.get('cfg')} on the logits, tau {s.get('tau')}, "
                  f"top_k {s.get('top_k')}, top_p {s.get('top_p')}, {dtype}; the sampling loop without the VAE "
                  f"decode, {fmt(model.get('flops_per_image'))} FLOPs per image; median of the timed runs:", ""]
    if rows:
        lines += table(["model", "image", "batch", "backend", "latency (s)", "images/s", "weights before (GiB)",
                        "peak memory over them (GiB)", "memory.py estimate (GiB)", "FLOP-floor fraction",
                        "speed-up vs reference", "fast vs upstream"], rows)
        lines += ["", "Every backend on the same weights (upstream holds var_fast's tensors); \"memory.py estimate\": "
                  "var_fast.infinity.memory's KV cache + last-scale activations for that backend (fast: its "
                  "preallocated cache) x batch, with the text's K/V counted at 512 tokens."]
    unavailable = next((r for r in records if r.get("section") == "infinity" and r.get("status") == "unavailable"), None)
    if unavailable is not None:
        lines.append(f"\nFast loop: {unavailable.get('reason')}.")
    for impl, r in checks.items():
        what = "passed" if r["status"] == "ok" else "refused"
        lines.append(f"\nInfinity greedy check, {impl} against the reference sampler (float32, "
                     f"{r['case'].get('pixels', '?')}, {r['case'].get('batch', '?')} prompts): {what} — {r.get('reason')}.")
    return lines


def _ms(x: float) -> str:
    """150, 96, 9.4, 0.35: short enough for a dozen in one cell."""
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def scales_section(records: List[Dict]) -> List[str]:
    rows = []
    for r in records:
        if r.get("section") != "scales" or r.get("status") != "ok":
            continue
        c = r["case"]
        per = r.get("scale_ms", [])
        rows.append([c.get("model"), r["impl"], fmt(sum(per) + r.get("after_last_scale_ms", 0.0)),
                     " · ".join(_ms(x) for x in per), fmt(r.get("after_last_scale_ms"))])
    if not rows:
        return []
    return (["Batch 1, one call after the timed ones, split at the end of each scale (CUDA events recorded by the "
             "`on_scale` callback, no added wait); ms:", ""]
            + table(["model", "backend", "total", "per scale, first to last", "after the last scale (decode)"], rows))


def _left_out_label(case: Dict) -> str:
    section = case.get("section", "?")
    rest = ", ".join(f"{k} {v}" for k, v in case.items() if k not in ("section", "image", "dtype"))
    return f"{section}: {rest}" if rest else section


def left_out_section(records: List[Dict]) -> List[str]:
    """Every case the time budget left out: whole steps of the plan, and implementations not started."""
    whole = [_left_out_label(r.get("case", {})) for r in records if r.get("section") == "left_out"]
    impls = [f"{r['section']}: " + ", ".join(f"{k} {v}" for k, v in r.get("case", {}).items()) + f" — {r['impl']}"
             for r in records if r.get("status") == "deadline" and r.get("section") != "left_out"]
    if not whole and not impls:
        return []
    return (["Left out by the time budget (not run, not failures; rerun with a larger `--total` or fewer "
             "`--models`/`--batches`):", ""] + [f"- {x}" for x in whole + impls])


NOTES = {
    "smoke": "**CPU smoke mode**: tiny shapes on the CPU (float32), no build, no sanitizer. Its numbers are CPU "
             "measurements that only show the script runs; they are not GPU results.",
    "rehearsal": "**REHEARSAL**: the GPU procedure's control flow on the CPU. The build, the CUDA tests' output "
                 "and every compute-sanitizer line are RECORDED outputs played back "
                 "(benchmarks/gpu_check/rehearsal/recorded/); the sanitize driver, the benchmarks and the Infinity "
                 "stage ran on the CPU with tiny shapes (float32). Nothing here is a GPU result.",
}


def latency_section(records: List[Dict]) -> List[str]:
    rows = []
    for r in records:
        if r.get("section") != "latency":
            continue
        case, k = r.get("case", {}), r.get("kernels") or {}
        per_scale = ", ".join(fmt(v, 3) for v in r.get("per_scale_ms", [])) or MISSING
        rows.append([case.get("model"), case.get("dtype"), cell(r, "total_ms", 4), per_scale,
                     fmt(k.get("per_block_and_scale")), fmt(k.get("per_scale_in_graph_outside_blocks")),
                     fmt(k.get("per_scale_outside_graph")), fmt(k.get("per_call_setup")), fmt(k.get("total")),
                     fmt(r.get("kernels_per_image_graphed")), r.get("count_rule", MISSING)])
    if not rows:
        return []
    lines = ["Batch-1 latency of the fast loop (one image with CFG, CUDA graphs, no decoding; median per scale) "
             "and its kernel launches (README, \"Batch-1 latency\"):", ""]
    return lines + table(["model", "dtype", "loop (ms)", "per scale (ms)", "kernels per block and scale",
                          "per scale, in graph outside blocks", "per scale outside graph", "per call setup",
                          "per image (eager)", "per image (graphed, profiler)", "counted"], rows)


def markdown(env: Dict, command: str, stages: List[Dict], records: List[Dict], total_s: float, budget_s: float,
             mode: str = "gpu") -> str:
    title = (f"## {env['date']} — gpu-check, {env['gpu']}, driver {env['driver']}, torch {env['torch']} "
             f"(CUDA {env['cuda']}), Python {env['python']}")
    lines = [title, "", f"Commit `{env['commit']}`, {env['cores']} CPU cores:", "", "    " + command, ""]
    if mode in NOTES:
        lines += [NOTES[mode], ""]
    # the order the benchmarks ran in: the headline sampler cases first, then the op tables
    parts = [stages_section(stages, total_s, budget_s), peak_section(records), sampler_section(records),
             scales_section(records), latency_section(records), sampling_section(records), attention_section(records), quant_section(records),
             collab_section(records), infinity_section(records),
             left_out_section(records)]
    for part in parts:
        if part:
            lines += part + [""]
    return "\n".join(lines)


def write(out_dir: str, env: Dict, command: str, stages: List[Dict], records: List[Dict], total_s: float,
          budget_s: float, mode: str = "gpu") -> Tuple[str, str]:
    import os
    md_path, json_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.json")
    with open(md_path, "w") as f:
        f.write(markdown(env, command, stages, records, total_s, budget_s, mode))
    with open(json_path, "w") as f:
        json.dump(dict(environment=env, command=command, mode=mode, total_s=total_s, budget_s=budget_s,
                       stages=stages, records=records), f, indent=1, default=str)
    return md_path, json_path
