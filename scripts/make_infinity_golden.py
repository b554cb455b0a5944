"""Make the Infinity test data: a tiny random T5 text encoder and upstream Infinity's own outputs.

Subcommands (run from the repository root):

    python scripts/make_infinity_golden.py t5                              # tests/data/infinity_tiny_t5/
    python scripts/make_infinity_golden.py cases --upstream /tmp/infinity  # tests/data/golden_infinity*.pt

``t5`` (offline, no download) builds a tiny random ``T5EncoderModel`` (flan-t5's architecture: gated-GELU
feed-forward, relative position buckets, final RMS norm; 2 layers, d_model 256, 4 heads of 8, d_ff 64) and a
``T5TokenizerFast`` over a small hand-made Unigram vocabulary with T5's special tokens (``<pad>`` = 0,
``</s>`` = 1, ``<unk>`` = 2, no sentinel ids), and saves both in Hugging Face layout (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json). The weights come from ``torch.manual_seed(T5_SEED)``
and transformers' own initialisation, so another transformers version may give other numbers: the committed
files are the reference, and the golden data stores the features they give.

``cases`` runs upstream FoundationVision/Infinity from a checkout at commit 4c27bbb (``git clone
https://github.com/FoundationVision/Infinity /tmp/infinity && git -C /tmp/infinity checkout 4c27bbb``; only
``infinity/`` is needed; never patched) through benchmarks/infinity_upstream.py, which says exactly what is
replaced there and why it is exact: flash-attn (a float32 stand-in on upstream's own bf16-cast inputs),
the torch.compile of ``infinity/models/fused_op.py`` (upstream's functions run eagerly), timm (registry,
eval-mode DropPath), imageio/torchvision when absent. It needs ``pip install einops pytz transformers``
(upstream's imports; timm, flash-attn, cv2, torchvision are not needed). About 2 CPU minutes.

Two small random-weight models in upstream's own classes (``Infinity`` with ``load_infinity``'s arguments and
the published models' flags; the BSQ VAE from ``vae_model`` as ``load_visual_tokenizer`` builds it, with small
widths), see GOLDEN_MODELS in benchmarks/infinity_upstream.py: "tiny" (4 blocks in 2 chunks, width 64, 2 heads,
d = 8 bits, VAE patch 16) and "tiny_patchify" (apply_spatial_patchify=1: 2 blocks, width 48, d = 6, 4d = 24 bits
per transformer token, VAE patch 8). The weights are seeded (``ModelSpec.seed``), bf16-representable, stored
in bfloat16, and the models that make the cases are loaded back from what is stored. Each case (``golden_cases``) is one
``autoregressive_infer_cfg`` call with the arguments tools/run_infinity.py's ``gen_one_img`` passes, B prompts
at once, text features from upstream's ``encode_prompt`` on the tiny T5; recorded: the bits of every scale, the
summed codes and upstream's uint8 image (BGR, as upstream returns it; stored for some cases, sha256 for all).
The "seed groups" are B=1 runs of a batch case's images with their own g_seed, for var_fast's image_seeds.
tests/infinity_golden.py documents the file layout and reads it; tests/test_infinity_golden_data.py checks it.
Running ``cases`` again on the same machine gives the same data (torch.load equal; the archive's internal
folder name follows the output file's name).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DATA = os.path.join(ROOT, "tests", "data")
T5_DIR = os.path.join(DATA, "infinity_tiny_t5")
GOLDEN = os.path.join(DATA, "golden_infinity.pt")
GOLDEN_WEIGHTS = os.path.join(DATA, "golden_infinity_weights.pt")
T5_SEED = 23

# Whole words get a better score than their letters, so a known word is one token and an unknown word
# falls back to single letters (characters outside the vocabulary become <unk>).
T5_WORDS = (
    "a an the of and with in on at by to from under over near behind front top side small big large tiny "
    "red green blue yellow white black orange purple pink brown gray golden silver dark bright "
    "cat dog bird fish horse cow sheep mouse fox bear lion tiger owl duck rabbit "
    "man woman boy girl child person people face eyes hair hat "
    "house tree flower garden forest mountain river lake sea sky cloud sun moon star beach road city street "
    "car bus train boat plane bicycle chair table cup bottle book clock lamp window door "
    "photo painting drawing portrait landscape picture image style art oil watercolor sketch "
    "sitting standing running flying sleeping eating holding looking "
    "very beautiful old new happy quiet soft sharp smooth detailed high quality low blurry ugly "
    "night day morning evening winter summer snow rain light shadow"
).split()
T5_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:;()")


def make_t5_tokenizer():
    """A T5TokenizerFast over a fixed Unigram vocabulary, built the way transformers builds T5's pipeline
    (WhitespaceSplit + Metaspace pre-tokenizer, ``$A </s>`` post-processor), so the saved tokenizer.json
    tokenizes the same whether a transformers version reads it as is (4.x) or rebuilds the T5 pipeline
    around its vocabulary (5.x)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -5.0 - 0.01 * i) for i, w in enumerate(T5_WORDS)]
    vocab += [(c, -12.0) for c in T5_CHARS]
    vocab += [("\u2581" + c, -11.0) for c in T5_CHARS]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
    ])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, extra_ids=0, eos_token="</s>", unk_token="<unk>",
                           pad_token="<pad>", model_max_length=512)


def make_t5_config(vocab_size: int):
    from transformers import T5Config

    # d_model 256: Infinity's TextAttentivePool uses Ct5 // 128 heads (flan-t5-xl: 2048 -> 16), so the text
    # width must be a multiple of 128; 256 gives the pool two heads.
    return T5Config(vocab_size=vocab_size, d_model=256, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                    num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
                    feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
                    initializer_factor=1.0, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0)


def make_tiny_t5(out_dir: str = T5_DIR) -> str:
    from transformers import T5EncoderModel

    tokenizer = make_t5_tokenizer()
    config = make_t5_config(len(tokenizer))
    torch.manual_seed(T5_SEED)
    model = T5EncoderModel(config).float().eval()
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    # check that what was written loads back as both classes and tokenizes as built
    from transformers import T5TokenizerFast

    back = T5TokenizerFast.from_pretrained(out_dir)
    probe = ["a photo of a red cat", "xyz  Q sitting   under the tree!"]
    assert back(probe).input_ids == tokenizer(probe).input_ids, "saved tokenizer tokenizes differently"
    T5EncoderModel.from_pretrained(out_dir)
    return out_dir


# ----------------------------------------------------------------------------------------------------------
# upstream Infinity's own outputs on two small random-weight models

PROMPTS = [
    "a photo of a red cat",
    "an oil painting of a small house near the river at night, very detailed",
    "dog",
    "a blue bird flying over the mountain, watercolor style",
    "two xylophones",  # words outside the tiny vocabulary: single letters
]
NEGATIVE = "blurry, ugly, low quality"
RUN_INFINITY_TOP_K, RUN_INFINITY_TOP_P = 900, 0.97  # gen_one_img's defaults (run_infinity's __main__ keeps them)
S = 7  # scales of every 0.06M schedule
# upstream's vae.encode of stored golden images (run_infinity's joint_vi_vae_encode_decode): (case, image index)
VAE_ENCODE_INPUTS = (("tiny_greedy_square", 0), ("tiny_patchify_run_infinity_wide_batch2_negative", 1))


def _case(name, model, prompts, covers, *, h_div_w=1.0, cfg=3.0, tau=1.0, top_k=0, top_p=0.0, layer=0, seed=0,
          negative=False, sampling_per_bits=1, store_image=False, seed_group=None, image_index=None):
    return dict(name=name, model=model, prompts=list(prompts), covers=covers, h_div_w=h_div_w,
                cfg_list=list(cfg) if isinstance(cfg, (list, tuple)) else [cfg] * S,
                tau_list=list(tau) if isinstance(tau, (list, tuple)) else [tau] * S,
                top_k=top_k, top_p=top_p, cfg_insertion_layer=[layer], g_seed=seed,
                negative_prompt=NEGATIVE if negative else None, sampling_per_bits=sampling_per_bits,
                store_image=store_image, seed_group=seed_group, image_index=image_index)


def golden_cases():
    P = PROMPTS
    rk, rp = RUN_INFINITY_TOP_K, RUN_INFINITY_TOP_P
    cfg_ramp, tau_ramp = [1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 4.0], [1.0, 1.0, 1.0, 0.9, 0.9, 0.8, 0.8]
    cases = [
        _case("tiny_greedy_square", "tiny", [P[0]], "greedy (top_k=1), CFG on the logits, learned uncond",
              top_k=1, store_image=True),
        _case("tiny_run_infinity_square_negative", "tiny", [P[1]],
              "run_infinity's top_k/top_p, per-scale cfg (1 at the first scale) and tau lists, negative prompt",
              cfg=cfg_ramp, tau=tau_ramp, top_k=rk, top_p=rp, seed=7, negative=True),
        _case("tiny_sampling_per_bits_8", "tiny", [P[1]],
              "as tiny_run_infinity_square_negative with sampling_per_bits=8 (upstream ignores it: same outputs)",
              cfg=cfg_ramp, tau=tau_ramp, top_k=rk, top_p=rp, seed=7, negative=True, sampling_per_bits=8),
        _case("tiny_top_p_wide_batch3", "tiny", [P[0], P[2], P[3]],
              "B=3 prompts of different lengths, h/w 0.5, top_p 0.9, tau 0.8, learned uncond",
              h_div_w=0.5, cfg=4.0, tau=0.8, top_p=0.9, seed=11),
        _case("tiny_layer_cfg_wide_batch2_negative", "tiny", [P[1], P[4]],
              "CFG at block -2's output (cfg_insertion_layer=-2), B=2, negative prompt, h/w 0.5",
              h_div_w=0.5, layer=-2, top_p=rp, seed=3, negative=True),
        _case("tiny_layer_cfg_last_greedy", "tiny", [P[2]],
              "CFG at the last block's output (cfg_insertion_layer=-1), greedy, learned uncond",
              cfg=2.0, layer=-1, top_k=1),
        _case("tiny_no_cfg_portrait_batch2", "tiny", [P[3], P[0]],
              "cfg 1 at every scale (no guidance batch), B=2, h/w 1.333, plain sampling (top_k=0, top_p=0)",
              h_div_w=1.333, cfg=1.0, seed=5),
        _case("tiny_patchify_greedy_square", "tiny_patchify", [P[0]], "patchify model, greedy, learned uncond",
              top_k=1),
        _case("tiny_patchify_run_infinity_wide_batch2_negative", "tiny_patchify", [P[1], P[3]],
              "patchify, run_infinity's top_k/top_p, cfg and tau lists, negative prompt, B=2, h/w 0.5",
              h_div_w=0.5, cfg=cfg_ramp, tau=tau_ramp, top_k=rk, top_p=rp, seed=1, negative=True,
              store_image=True),
        _case("tiny_patchify_layer_cfg_batch2", "tiny_patchify", [P[2], P[4]],
              "patchify, CFG at the last block's output, B=2, top_p 0.9, tau 1.1, learned uncond",
              layer=-1, tau=1.1, top_p=0.9, seed=2),
    ]
    # image_seeds: image i of a batch drawn with its own generator seeded s must equal upstream's B=1 run, g_seed=s
    for group, seeds in (("tiny_top_p_wide_batch3", (100, 101, 102)),
                         ("tiny_patchify_run_infinity_wide_batch2_negative", (200, 201))):
        base = next(c for c in cases if c["name"] == group)
        for i, (prompt, s) in enumerate(zip(base["prompts"], seeds)):
            single = dict(base, name=f"{group}__image{i}_seed{s}", prompts=[prompt], g_seed=s, store_image=False,
                          seed_group=group, image_index=i,
                          covers=f"B=1 run of image {i} of {group} with g_seed={s} (for image_seeds)")
            cases.append(single)
    return cases


def _bf16_state_dict(module):
    return {k: (v.detach().bfloat16() if v.is_floating_point() else v.detach().clone())
            for k, v in module.state_dict().items()}


def _float_state_dict(sd):
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def _cond_record(cond):
    kv_compact, lens, cu_seqlens_k, ltext = cond
    return dict(kv_compact=kv_compact.clone(), lens=list(lens), cu_seqlens_k=cu_seqlens_k.clone(), Ltext=int(ltext))


def make_golden(upstream: str, out: str, weights_out: str, t5_dir: str = T5_DIR) -> None:
    import hashlib

    import transformers

    sys.path.insert(0, ROOT)
    from benchmarks import infinity_upstream as iu

    up = iu.import_upstream(upstream)
    tokenizer, encoder = iu.load_t5(t5_dir)
    models, weights = {}, {}
    for name, spec in iu.GOLDEN_MODELS.items():
        vae = iu.build_vae(up, spec)
        model = iu.build_infinity(up, spec, vae)
        weights[name] = dict(config=spec.config(), transformer=_bf16_state_dict(model), vae=_bf16_state_dict(vae))
        # run with models loaded back from what is stored, so the file reproduces the outputs by construction
        vae = iu.build_vae(up, spec, _float_state_dict(weights[name]["vae"]))
        models[name] = (spec, vae, iu.build_infinity(up, spec, vae, _float_state_dict(weights[name]["transformer"])))

    cases = []
    for case in golden_cases():
        spec, vae, model = models[case["model"]]
        template, schedule = iu.scale_schedule(up, case["h_div_w"], spec.pn)
        B = len(case["prompts"])
        cond = iu.encode_prompt(tokenizer, encoder, case["prompts"])
        negative = None
        if case["negative_prompt"]:
            negative = iu.encode_prompt(tokenizer, encoder, [case["negative_prompt"]] * B)
        run = iu.run_autoregressive(model, vae, cond, scale_schedule=schedule, cfg_list=case["cfg_list"],
                                    tau_list=case["tau_list"], top_k=case["top_k"], top_p=case["top_p"],
                                    cfg_insertion_layer=case["cfg_insertion_layer"], g_seed=case["g_seed"],
                                    negative=negative, sampling_per_bits=case["sampling_per_bits"], B=B)
        if len(run.bits) != len(schedule):
            raise RuntimeError(f"{case['name']}: recorded {len(run.bits)} scales, schedule has {len(schedule)}")
        record = {k: v for k, v in case.items() if k != "store_image"}
        record.update(
            B=B, h_div_w_template=template, pn=spec.pn, scale_schedule=[list(s) for s in schedule],
            cond=_cond_record(cond), negative=_cond_record(negative) if negative is not None else None,
            bits=[b.to(torch.uint8) for b in run.bits], summed_codes=run.summed_codes,
            image_shape=list(run.image_bgr.shape),
            image_sha256=[hashlib.sha256(im.contiguous().numpy().tobytes()).hexdigest() for im in run.image_bgr],
            image_bgr=run.image_bgr.clone() if case["store_image"] else None,
        )
        cases.append(record)
        print(f"{case['name']}: B={B} schedule {schedule[-1][1:]} bits/scale "
              f"{[round(b.float().mean().item(), 2) for b in run.bits]}")

    vae_encode = []
    for case_name, index in VAE_ENCODE_INPUTS:
        record = next(c for c in cases if c["name"] == case_name)
        spec, vae, _ = models[record["model"]]
        patch = 2 if spec.apply_spatial_patchify else 1
        vae_schedule = [(t, patch * h, patch * w) for t, h, w in record["scale_schedule"]]
        image_rgb = record["image_bgr"][index].flip(dims=(2,))
        enc = iu.run_vae_encode(vae, image_rgb, vae_schedule)
        vae_encode.append(dict(
            model=record["model"], input_case=case_name, input_index=index,
            scale_schedule=[list(s) for s in vae_schedule], h=enc["h"], z=enc["z"],
            bits=[b.to(torch.uint8) for b in enc["bits"]], var_input=enc["var_input"],
            recon_shape=list(enc["recon_rgb"].shape),
            recon_sha256=hashlib.sha256(enc["recon_rgb"].contiguous().numpy().tobytes()).hexdigest()))
        print(f"vae encode {record['model']} <- {case_name}[{index}]: bits/scale "
              f"{[round(b.float().mean().item(), 2) for b in enc['bits']]}")

    t5_features = []
    for prompts in (PROMPTS, [""], [PROMPTS[2]]):
        t5_features.append(dict(prompts=list(prompts), **_cond_record(iu.encode_prompt(tokenizer, encoder, prompts))))

    source = dict(repo=iu.UPSTREAM_REPO, commit=_git_commit(upstream) or iu.UPSTREAM_COMMIT,
                  script="scripts/make_infinity_golden.py", torch=str(torch.__version__),
                  transformers=transformers.__version__)
    torch.save(dict(format=1, source=source, notes=GOLDEN_NOTES, cases=cases, t5_features=t5_features,
                    vae_encode=vae_encode), out)
    torch.save(dict(format=1, source=source, models=weights), weights_out)
    print("wrote", out, os.path.getsize(out), "bytes;", weights_out, os.path.getsize(weights_out), "bytes")


GOLDEN_NOTES = """\
bits[s]: [B, 1, h, w, d] uint8 0/1 per scale s, as upstream passes them to vae.quantizer.lfq.indices_to_codes
(int64 there; for the patchify model already pixel-shuffled back to the VAE's 2h x 2w grid, d bits).
summed_codes: [B, d, H, W] float32, what upstream passes to vae.decode (summed_codes.squeeze(-3)).
image_bgr: uint8 [B, H, W, 3] exactly as autoregressive_infer_cfg returns it: BGR (it flips RGB for cv2),
((x + 1) / 2 * 255).to(uint8), truncation not rounding, after vae.decode's clamp to [-1, 1]; stored for some
cases, image_sha256 (of each image's BGR bytes) for all.
cond / negative: upstream encode_prompt's (kv_compact [sum(lens), 256] float32, lens, cu_seqlens_k int32, Ltext)
from the tiny T5 (tests/data/infinity_tiny_t5); a negative prompt is encoded once per image (B times).
Without a negative prompt and with any cfg != 1, upstream uses its learned cfg_uncond[:len] per prompt.
The generator: a CPU torch.Generator, manual_seed(g_seed) once, drawing over the whole batch (multinomial
over [B * l * d, 2] bit probabilities per scale).
Weights are stored in bfloat16 (all values are bf16-representable); upstream ran them as float32.
vae_encode: upstream's vae.encode of a stored image (input_case's image_bgr[input_index], flipped to RGB,
to_tensor, x + x - 1) on the VAE grid's schedule: h (encoder output), z (summed quantized codes), bits per
scale [1, 1, h, w, d] uint8 (int32 there), var_input, and the sha256 of vae.decode(z) as run_infinity's
joint_vi_vae_encode_decode makes it ((x + 1) / 2 * 255, numpy astype uint8, RGB, no flip)."""


def _git_commit(path: str):
    import subprocess

    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t5 = sub.add_parser("t5", help="make the tiny random T5 encoder + tokenizer (offline)")
    t5.add_argument("--out", default=T5_DIR)
    cases = sub.add_parser("cases", help="run upstream Infinity from a checkout and record its outputs")
    cases.add_argument("--upstream", required=True, help="FoundationVision/Infinity checkout (commit 4c27bbb)")
    cases.add_argument("--out", default=GOLDEN)
    cases.add_argument("--weights-out", default=GOLDEN_WEIGHTS)
    args = parser.parse_args(argv)
    if args.command == "t5":
        print("wrote", make_tiny_t5(args.out))
    elif args.command == "cases":
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        make_golden(args.upstream, args.out, args.weights_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
