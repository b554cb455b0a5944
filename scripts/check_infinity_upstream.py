"""Check var_fast's Infinity port against upstream's modules, run from a FoundationVision/Infinity checkout.

    python scripts/check_infinity_upstream.py --upstream /path/to/Infinity            # the checks, prints a table
    python scripts/check_infinity_upstream.py --upstream /path/to/Infinity --layouts  # also rewrite
        tests/data/infinity_state_dicts.json (upstream's key/shape/dtype layout of the published sizes)

Upstream is imported the way the golden cases import it (benchmarks/infinity_upstream.py: flash-attn, timm
replaced by exact stand-ins; needs einops and pytz). Checks, for the tiny models of tests/infinity_factory.py
("2b" and the patchify "8b"):
1. upstream's state dicts have exactly var_fast's keys, shapes and dtypes, and load strictly into var_fast;
2. the config read off upstream's state dict is the one the model was built with;
3. autoregressive_infer_cfg and infer_reference give equal bits at every scale and equal uint8 images (seed
   mode, and image_seeds against upstream's B=1 runs), with several sampling settings;
4. vae.encode gives the same bits per scale and features, and decode the same image;
5. the RoPE2d caches of all 60 published schedules, for each rope2d_normalized_by_hw (0, 1, 2).
Upstream only runs full pixel-budget schedules (its RoPE caches are keyed by them); for the shorter template
prefixes used here for speed, its own cache of that template is registered under the prefix.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def upstream_vae(iu, up, vcfg):
    """Upstream's vae_model with the factory's widths (vae_model fixes base_ch and num_res_blocks: overridden)."""
    real = up.vae.AutoEncoder

    def small(args):
        args.base_ch, args.num_res_blocks = vcfg["ch"], vcfg["num_res_blocks"]
        return real(args)

    up.vae.AutoEncoder = small
    try:
        return up.vae.vae_model(None, "dynamic", vcfg["codebook_dim"], 2 ** vcfg["codebook_dim"],
                                patch_size=2 ** len(vcfg["encoder_down_levels"]),
                                encoder_ch_mult=list(vcfg["encoder_ch_mult"]),
                                decoder_ch_mult=list(vcfg["decoder_ch_mult"]), test_mode=True).eval()
    finally:
        up.vae.AutoEncoder = real


def upstream_infinity(iu, up, tcfg, vae, patchify: bool, pn: str = "0.06M"):
    spec = iu.ModelSpec(name="check", depth=tcfg["depth"], embed_dim=tcfg["embed_dim"], num_heads=tcfg["num_heads"],
                        block_chunks=tcfg["block_chunks"], codebook_dim=vae.codebook_dim,
                        apply_spatial_patchify=int(patchify), vae_base_ch=32, vae_ch_mult=(1,), vae_num_res_blocks=1,
                        seed=0, text_channels=tcfg["text_channels"], mlp_ratio=tcfg["mlp_hidden"] / tcfg["embed_dim"], pn=pn)
    return iu.build_infinity(up, spec, vae)


def register_prefix_rope(model, schedule):
    key = str(tuple(schedule))
    if key in model.rope2d_freqs_grid:
        return
    from var_fast.infinity.schedules import TEMPLATES
    for grids in TEMPLATES.values():
        full = [(1, h, w) for h, w in grids]
        if full[:len(schedule)] == list(schedule):
            model.rope2d_freqs_grid[key] = model.rope2d_freqs_grid[str(tuple(full))]
            return


def published_layouts(iu, up) -> dict:
    """Upstream's layouts of infinity_2b + the d32 VAE and infinity_8b + the d14 patchify VAE, on the meta device
    (two scalar helpers upstream computes with .item() are made on the CPU)."""
    real_linspace, real_tensor = torch.linspace, torch.tensor
    torch.linspace = lambda *a, **k: real_linspace(*a, **{**k, "device": "cpu"})
    torch.tensor = lambda *a, **k: real_tensor(*a, **{**k, "device": k.get("device", "cpu")})
    out = {}
    try:
        specs = {"infinity_2b": (dict(depth=32, embed_dim=2048, num_heads=16, mlp_hidden=8192, text_channels=2048, block_chunks=8),
                                 dict(codebook_dim=32, ch=128, encoder_ch_mult=(1, 2, 4, 4, 4), decoder_ch_mult=(1, 2, 4, 4, 4),
                                      num_res_blocks=2, encoder_down_levels=(0, 1, 2, 3)), False, "vae_d32"),
                 "infinity_8b": (dict(depth=40, embed_dim=3584, num_heads=28, mlp_hidden=14336, text_channels=2048, block_chunks=8),
                                 dict(codebook_dim=14, ch=128, encoder_ch_mult=(1, 2, 4, 4), decoder_ch_mult=(1, 2, 4, 4),
                                      num_res_blocks=2, encoder_down_levels=(0, 1, 2)), True, "vae_d14_patchify")}
        for name, (t, v, patchify, vae_name) in specs.items():
            with torch.device("meta"):
                vae = upstream_vae(iu, up, v)
                model = upstream_infinity(iu, up, t, vae, patchify, pn="1M")
            for key, mod in ((name, model), (vae_name, vae)):
                out[key] = {k: [list(x.shape), str(x.dtype).replace("torch.", "")] for k, x in mod.state_dict().items()}
    finally:
        torch.linspace, torch.tensor = real_linspace, real_tensor
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True, help="FoundationVision/Infinity checkout (commit 4c27bbb)")
    parser.add_argument("--layouts", action="store_true", help="rewrite tests/data/infinity_state_dicts.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

    from benchmarks import infinity_upstream as iu
    from infinity_factory import CONFIGS, make_models, random_text
    from var_fast.infinity import bsq_vae_config_from_state_dict, infer_reference, infinity_config_from_state_dict
    from var_fast.infinity.loading import bsq_vae_from_state_dict, infinity_from_state_dict
    from var_fast.infinity.schedules import scale_schedule, vae_schedule

    up = iu.import_upstream(args.upstream)
    failures = 0

    def report(what, ok):
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)

    from var_fast.infinity.rope2d import rope_cache
    from var_fast.infinity.schedules import PIXEL_BUDGETS, PUBLISHED_RATIOS, full_grid_of
    for mode in (0, 1, 2):
        for head_dim in (64, 128):
            grid = up.basic.precompute_rope2d_freqs_grid(
                dim=head_dim, dynamic_resolution_h_w=up.dynamic_resolution.dynamic_resolution_h_w,
                rope2d_normalized_by_hw=mode, pad_to_multiplier=128)
            ok = True
            for ratio in PUBLISHED_RATIOS:
                for pn in PIXEL_BUDGETS:
                    sched = scale_schedule(ratio, pn)
                    n = sum(h * w for _, h, w in sched)
                    ok &= torch.equal(grid[str(tuple(sched))][:, 0, 0, 0, :n], rope_cache(head_dim, sched, full_grid_of(sched), mode))
            report(f"RoPE2d caches (rope2d_normalized_by_hw={mode}, head dim {head_dim}), all 60 published schedules", ok)

    for name in ("2b", "8b"):
        tcfg, vcfg = CONFIGS[name]
        patchify = name == "8b"
        uv = upstream_vae(iu, up, vcfg)
        um = upstream_infinity(iu, up, tcfg, uv, patchify)
        mm, mv = make_models(name)
        for what, a, b in (("transformer", um.state_dict(), mm.state_dict()), ("VAE", uv.state_dict(), mv.state_dict())):
            same = a.keys() == b.keys() and all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
            report(f"{name}: upstream {what} keys, shapes, dtypes == var_fast's", same)
        report(f"{name}: config read off upstream's state dicts", infinity_config_from_state_dict(um.state_dict()) == mm.cfg
               and bsq_vae_config_from_state_dict(uv.state_dict()) == mv.cfg)
        m2, v2 = infinity_from_state_dict(um.state_dict()), bsq_vae_from_state_dict(uv.state_dict())
        report(f"{name}: upstream's (random) state dicts load strictly, values equal",
               all(torch.equal(m2.state_dict()[k], v) for k, v in um.state_dict().items())
               and all(torch.equal(v2.state_dict()[k], v) for k, v in uv.state_dict().items()))
        # the same weights in both: var_fast's factory weights into upstream's modules
        um.load_state_dict(mm.state_dict(), strict=True)
        uv.load_state_dict(mv.state_dict(), strict=True)
        settings = [dict(ratio=1.0, n=5, lens=[5, 9], neg=None, cfg=3.0, tau=1.0, top_k=0, top_p=0.0, layer=0, seed=0),
                    dict(ratio=1.0, n=7, lens=[5, 9], neg=[3, 4], cfg=3.0, tau=1.0, top_k=1, top_p=0.0, layer=0, seed=1),
                    dict(ratio=0.5, n=5, lens=[7, 2], neg=None, cfg=4.0, tau=0.5, top_k=0, top_p=0.9, layer=-1, seed=2),
                    dict(ratio=1.333, n=5, lens=[6], neg=None, cfg=1.0, tau=1.0, top_k=0, top_p=0.0, layer=0, seed=3)]
        for s in settings:
            sched = scale_schedule(s["ratio"], "0.06M")[:s["n"]]
            register_prefix_rope(um, sched)
            cond = random_text(s["lens"], 1)
            neg = random_text(s["neg"], 2) if s["neg"] else None
            kw = dict(cfg_list=[s["cfg"]] * len(sched), tau_list=[s["tau"]] * len(sched), top_k=s["top_k"],
                      top_p=s["top_p"], cfg_insertion_layer=[s["layer"]])
            ref = iu.run_autoregressive(um, uv, cond.as_upstream(), scale_schedule=sched, g_seed=s["seed"],
                                        negative=None if neg is None else neg.as_upstream(), B=cond.batch_size, **kw)
            out = infer_reference(mm, mv, cond, sched, negative=neg, seed=s["seed"], **kw)
            label = f"{name}: sampler {s}"
            report(label + " bits", all(torch.equal(a, b) for a, b in zip(ref.bits, out.bits)) and len(ref.bits) == len(out.bits))
            report(label + " image", torch.equal(ref.image_bgr.flip(dims=(3,)), out.images))
            if cond.batch_size > 1:
                seeds = [s["seed"] + 10 * i for i in range(cond.batch_size)]
                per = infer_reference(mm, mv, cond, sched, negative=neg, image_seeds=seeds, **kw)
                for i, gs in enumerate(seeds):
                    one = iu.run_autoregressive(um, uv, cond.select([i]).as_upstream(), scale_schedule=sched, g_seed=gs,
                                                negative=None if neg is None else neg.select([i]).as_upstream(), B=1, **kw)
                    report(f"{name}: image_seeds image {i} == upstream B=1 g_seed={gs}",
                           all(torch.equal(a, b[i:i + 1]) for a, b in zip(one.bits, per.bits))
                           and torch.equal(one.image_bgr.flip(dims=(3,))[0], per.images[i]))
        sched = vae_schedule(scale_schedule(1.0, "0.06M")[:5], patchify)
        side = sched[-1][1] * mv.cfg.downsample
        img = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
        with torch.no_grad():
            _, z, _, bits_up, _, _ = uv.encode(img, scale_schedule=sched)
            summed, bits = mv.encode(img, sched)
            report(f"{name}: VAE encode bits, features and decode",
                   all(torch.equal(a, b) for a, b in zip(bits_up, bits)) and torch.equal(z, summed)
                   and torch.equal(uv.decode(z), mv.decode(summed)))

    if args.layouts:
        path = os.path.join(ROOT, "tests", "data", "infinity_state_dicts.json")
        with open(path, "w") as f:
            json.dump(published_layouts(iu, up), f, indent=0, sort_keys=True)
        print("wrote", path)
    print("all checks passed" if not failures else f"{failures} check(s) FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
