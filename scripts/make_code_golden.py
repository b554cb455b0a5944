"""Make tests/data/golden_code.pt: what CoDe's own code samples on small random-weight drafter/refiner pairs.

CoDe ("Collaborative Decoding Makes Visual Auto-Regressive Modeling Efficient", github.com/czg1225/CoDe)
runs the first N scales on a drafter (``VAR.autoregressive_infer_cfg_draft``) and the rest on a refiner
(``VAR.autoregressive_infer_cfg_refine``) of its ``models/var.py``. This script imports that file from a
checkout, loads the deterministic weights of tests/model_factory.py (drafter/refiner pairs
``CODE_PAIRS``, sharing the drafter's VQVAE) into CoDe's VAR/VQVAE classes with strict=True, and records,
per case, the tokens of every scale (recorded from CoDe's ``sample_with_top_k_top_p_`` calls: the
drafter's for scales < N, the refiner's entry draw and later scales) and the final image, float32 on
the CPU.

Regenerate (CPU only; CoDe's optional flash-attn/xformers imports are simply absent):

    git clone https://github.com/czg1225/CoDe /tmp/code   # or, from a bare mirror:
    #   mkdir /tmp/code && for f in dist.py models/{__init__,var,basic_var,helpers,vqvae,basic_vae,quant}.py; do
    #     mkdir -p /tmp/code/$(dirname $f); git --git-dir=<mirror> show HEAD:$f > /tmp/code/$f; done
    pip install huggingface_hub           # CoDe's models/var.py imports PyTorchModelHubMixin
    PYTHONPATH=$PWD:$PWD/tests python scripts/make_code_golden.py /tmp/code [--commit <sha>]

The data in the repository was made from czg1225/CoDe at commit bfb204d (see ``source`` in the file).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "golden_code.pt")


def import_code(checkout: str):
    sys.path.insert(0, checkout)
    with contextlib.redirect_stdout(io.StringIO()):
        import models  # noqa: F401  (CoDe's package)
        import models.var as code_var
        from models.vqvae import VQVAE
    return code_var, VQVAE


def build_code_models(code_var, code_vqvae_cls, var_cfg, vae_cfg, var_sd, vae_sd):
    vae = code_vqvae_cls(vocab_size=vae_cfg.vocab_size, z_channels=vae_cfg.z_channels, ch=vae_cfg.ch, test_mode=True,
                         share_quant_resi=vae_cfg.share_quant_resi, v_patch_nums=tuple(vae_cfg.patch_nums))
    vae.load_state_dict(vae_sd, strict=True)
    with contextlib.redirect_stdout(io.StringIO()):
        var = code_var.VAR(vae_local=vae, num_classes=var_cfg.num_classes, depth=var_cfg.depth,
                           embed_dim=var_cfg.embed_dim, num_heads=var_cfg.num_heads,
                           mlp_ratio=var_cfg.mlp_hidden / var_cfg.embed_dim, norm_eps=var_cfg.norm_eps,
                           shared_aln=var_cfg.shared_aln, attn_l2_norm=var_cfg.attn_l2_norm,
                           patch_nums=tuple(var_cfg.patch_nums), flash_if_available=False, fused_if_available=False)
    var.load_state_dict(var_sd, strict=True)
    return var.eval(), vae.eval()


def cases_for(S: int):
    """N at both ends (1 and S - 1); greedy, seeded top-k/top-p with schedules, random labels, more_smooth."""
    out = []
    for N in (1, S - 1):
        out += [
            dict(N=N, label=[3, 7, 0], B=3, cfg=1.5, top_k=[1] * S, top_p=0.0, temp=[1.0] * S, seed=0, more_smooth=False),
            dict(N=N, label=[3, 7, 0, 10], B=4, cfg=2.0, top_k=[5, 10, 20, 30][:S], top_p=0.9,
                 temp=[1.1, 1.1, 1.0, 1.0][:S], seed=11, more_smooth=False),
            dict(N=N, label=None, B=3, cfg=4.0, top_k=[40] * S, top_p=0.95, temp=[1.1] * (S - 1) + [1.0], seed=5,
                 more_smooth=False),
            dict(N=N, label=[1, 2], B=2, cfg=1.0, top_k=[0] * S, top_p=0.0, temp=[0.7] * S, seed=2**40 + 3,
                 more_smooth=False),
            dict(N=N, label=[4, 5], B=2, cfg=1.5, top_k=[8] * S, top_p=0.0, temp=[1.0] * S, seed=9, more_smooth=True),
        ]
    return out


def run_case(code_var, drafter, refiner, case):
    calls = []
    original = code_var.sample_with_top_k_top_p_

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out[:, :, 0].clone())
        return out

    code_var.sample_with_top_k_top_p_ = recording
    try:
        label = None if case["label"] is None else torch.tensor(case["label"])
        N = case["N"]
        with torch.no_grad():
            f_hat, hub = drafter.autoregressive_infer_cfg_draft(
                B=case["B"], label_B=label, cfg=case["cfg"], top_k=case["top_k"], top_p=case["top_p"],
                g_seed=case["seed"], more_smooth=case["more_smooth"], exit_num=N, temp=case["temp"])
            drafted = list(calls)
            calls.clear()
            image = refiner.autoregressive_infer_cfg_refine(
                B=case["B"], label_B=label, cfg=case["cfg"], top_k=case["top_k"], top_p=case["top_p"],
                g_seed=case["seed"], more_smooth=case["more_smooth"], draft=hub, f_hat=f_hat, entry_num=N,
                temp=case["temp"])
    finally:
        code_var.sample_with_top_k_top_p_ = original
    assert len(drafted) == N and len(calls) == len(drafter.patch_nums), (len(drafted), len(calls))
    return drafted + calls[N:], image


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", help="a checkout of github.com/czg1225/CoDe (its models/ and dist.py)")
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--commit", default="", help="the checkout's commit, recorded in the data (default: git)")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    from model_factory import CODE_PAIRS, make_models
    code_var, code_vqvae_cls = import_code(os.path.abspath(args.checkout))
    data = {}
    for drafter_name, refiner_name in CODE_PAIRS:
        d_var, vae = make_models(drafter_name, seed=0)
        r_var, _ = make_models(refiner_name, seed=7)
        vae_sd = vae.state_dict()
        drafter, code_vae = build_code_models(code_var, code_vqvae_cls, d_var.config, vae.config, d_var.state_dict(), vae_sd)
        refiner, _ = build_code_models(code_var, code_vqvae_cls, r_var.config, vae.config, r_var.state_dict(), vae_sd)
        refiner.vae_proxy = drafter.vae_proxy  # one VQVAE for the pair, as CoDe's build_vae_var_ctf
        refiner.vae_quant_proxy = drafter.vae_quant_proxy
        cases = []
        for case in cases_for(len(d_var.patch_nums)):
            tokens, image = run_case(code_var, drafter, refiner, case)
            cases.append(dict(case, tokens=tokens, image=image[:1].half()))  # first image only: small data
        data[f"{drafter_name}+{refiner_name}"] = dict(cases=cases, drafter_seed=0, refiner_seed=7)
    commit = args.commit
    if not commit and os.path.isdir(os.path.join(args.checkout, ".git")):
        commit = subprocess.run(["git", "-C", args.checkout, "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    data["source"] = f"github.com/czg1225/CoDe {commit or '(commit unknown)'}"
    torch.save(data, args.out)
    print(f"wrote {args.out}: {', '.join(k for k in data if k != 'source')}")


if __name__ == "__main__":
    main()
