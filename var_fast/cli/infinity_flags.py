"""The flags of Infinity (text to image) in ``var-fast sample`` and ``sample-fid``, and their checks before
any model loads. A run is an Infinity run when --model names an Infinity model or --transformer,
--text-encoder, --prompt or --prompts is given; VAR's own flags are then refused, and the other way round."""
from __future__ import annotations

import argparse
from typing import List, Optional

from var_fast.cli.common import positive_int

# VAR flags (attribute, flag, value when not given) that an Infinity run refuses
VAR_ONLY = (("classes", "--classes", None), ("var", "--var", None), ("refiner", "--refiner", None),
            ("draft_steps", "--draft-steps", None), ("patch_nums", "--patch-nums", None),
            ("more_smooth", "--more-smooth", False), ("temperature", "--temperature", None),
            ("per_class", "--per-class", None))
INFINITY_ONLY = (("transformer", "--transformer", None), ("text_encoder", "--text-encoder", None),
                 ("prompt", "--prompt", None), ("prompts", "--prompts", None), ("negative_prompt", "--negative-prompt", None),
                 ("tau", "--tau", None), ("aspect_ratio", "--aspect-ratio", None), ("pixels", "--pixels", None),
                 ("size", "--size", None), ("cfg_insertion_layer", "--cfg-insertion-layer", None),
                 ("text_encoder_offload", "--text-encoder-offload", None),
                 ("text_encoder_dtype", "--text-encoder-dtype", None), ("per_prompt", "--per-prompt", None),
                 ("batched", "--batched", None))


def add_infinity_flags(p: argparse.ArgumentParser, prompt_flag: bool = True) -> None:
    g = p.add_argument_group(
        "Infinity (text to image: --model infinity-2b, or --transformer/--vae/--text-encoder)",
        "Sampling defaults for Infinity are upstream run_infinity.py's: --cfg 3, --top-k 900, --top-p 0.97, --tau 1, "
        "--cfg-insertion-layer 0, --seed 0 (--top-k takes one integer). VAR's --classes, --per-class, --temperature, "
        "--refiner, --more-smooth and --patch-nums do not apply.")
    g.add_argument("--transformer", help="Infinity transformer: .pth, .safetensors, or a folder of safetensors shards")
    g.add_argument("--text-encoder", help="the T5 encoder's Hugging Face folder (google/flan-t5-xl for the published "
                                          "models)")
    if prompt_flag:
        g.add_argument("--prompt", action="append", metavar="TEXT",
                       help="a prompt (repeat the flag for several); its images are <prompt index:04d>_<n:03d>.png")
    g.add_argument("--prompts", metavar="FILE", help="a UTF-8 file of prompts, one per line, no blank lines")
    g.add_argument("--per-prompt", type=positive_int, default=None, help="images per prompt (default: 1)")
    g.add_argument("--negative-prompt", default=None,
                   help="text for the unconditional half of CFG (default: the model's learned empty embedding)")
    g.add_argument("--tau", default=None,
                   help="temperature dividing the bit logits: one value or one per scale, comma-separated (default: 1, "
                        "upstream run_infinity.py; its infer.sh uses 0.5 for Infinity-2B)")
    g.add_argument("--aspect-ratio", default=None,
                   help="height/width (0.5, 1, 2 ...) or W:H (16:9), snapped to the nearest published template as "
                        "upstream does (default: 1)")
    g.add_argument("--pixels", default=None, choices=["0.06M", "0.25M", "0.60M", "1M"],
                   help="pixel budget: the scale schedule's length (default: the model's, 1M for infinity-2b/8b, "
                        "0.25M for infinity-8b-512)")
    g.add_argument("--size", default=None, metavar="WxH",
                   help="instead of --aspect-ratio/--pixels: aspect ratio H/W and the budget nearest to W*H; the image "
                        "is the template's size (printed)")
    g.add_argument("--cfg-insertion-layer", type=int, default=None,
                   help="0: CFG on the logits (default, upstream run_infinity.py); -k: on block depth-k's output")
    g.add_argument("--batched", action="store_true", default=None,
                   help="sample --batch-size images in one pass (faster on a GPU; an image may then differ from its "
                        "B=1 run in float rounding). Default: each image alone, exactly upstream's B=1 run")
    g.add_argument("--text-encoder-offload", default=None, choices=["none", "cpu", "free"],
                   help="none: the T5 encoder stays on the device; cpu: it stays in CPU memory and runs there; free: "
                        "loaded for the prompts, then freed before sampling (default: none)")
    g.add_argument("--text-encoder-dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="the T5 encoder's dtype (default auto: float16 on CUDA as upstream, float32 on the CPU)")


def is_infinity_run(args) -> bool:
    from var_fast.hub import is_infinity_name
    return (is_infinity_name(getattr(args, "model", None))
            or any(getattr(args, a, None) is not None for a in ("transformer", "text_encoder", "prompt", "prompts")))


def check_not_given(args, flags, why: str) -> None:
    given = [flag for attr, flag, unset in flags if getattr(args, attr, unset) not in (unset, None)]
    if given:
        raise ValueError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply {why}")


def check_infinity_model_flags(args) -> None:
    """--model NAME alone, or all of --transformer/--vae/--text-encoder; no VAR-only flag."""
    check_not_given(args, VAR_ONLY, "to an Infinity model (text to image)")
    paths = [args.transformer, args.vae, args.text_encoder]
    if args.model is not None:
        if any(p is not None for p in paths):
            raise ValueError("pass either --model NAME or --transformer/--vae/--text-encoder paths, not both")
        return
    missing = [f for f, v in zip(("--transformer", "--vae", "--text-encoder"), paths) if v is None]
    if missing:
        raise ValueError(f"an Infinity model needs --transformer, --vae and --text-encoder (or --model infinity-2b); "
                         f"missing {', '.join(missing)}")


def check_var_run(args) -> None:
    """A VAR run: no Infinity-only flag."""
    check_not_given(args, INFINITY_ONLY, "to a VAR model (class-conditional); use --model infinity-2b or "
                                        "--transformer/--vae/--text-encoder for Infinity")


def prompt_list(args) -> List[str]:
    from var_fast.infinity.prompts import read_prompts
    from var_fast.infinity.text_encoder import check_prompts
    given = getattr(args, "prompt", None)
    if given is not None and args.prompts is not None:
        raise ValueError("pass --prompt TEXT (repeatable) or --prompts FILE, not both")
    if args.prompts is not None:
        return read_prompts(args.prompts)
    if given is None:
        raise ValueError("an Infinity model needs prompts: --prompt TEXT (repeatable) or --prompts FILE")
    return check_prompts(given, "--prompt")


def number_list(flag: str, text: Optional[str], default: float):
    """'3' -> 3.0, '3,3,4' -> [3.0, 3.0, 4.0] (the count is checked against the schedule later)."""
    if text is None:
        return default
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected a number or comma-separated numbers, one per scale") from None
    return values[0] if len(values) == 1 else values


def infinity_sampling(args, schedule_len) -> dict:
    """The sampling keyword arguments of InfinitySampler.sample_batches from the flags, checked (everything
    that does not need the model)."""
    from var_fast.infinity import sampling_args as sa
    from var_fast.labels import check_seed
    if args.size is not None and (args.aspect_ratio is not None or args.pixels is not None):
        raise ValueError("pass --size WxH or --aspect-ratio/--pixels, not both")
    if args.size is not None:
        aspect_ratio, pixels = sa.parse_size(args.size)
    else:
        aspect_ratio, pixels = args.aspect_ratio if args.aspect_ratio is not None else 1.0, args.pixels
    sa.check_aspect_ratio(aspect_ratio)
    if pixels is not None:
        sa.check_pixels(pixels)
    cfg = sa.CFG if args.cfg is None else args.cfg
    tau = number_list("--tau", args.tau, sa.TAU)
    try:
        top_k = sa.TOP_K if args.top_k is None else int(args.top_k)
    except ValueError:
        raise ValueError(f"--top-k {args.top_k!r}: Infinity takes one integer (0 disables)") from None
    top_p = sa.TOP_P if args.top_p is None else args.top_p
    sa.check_top_k_top_p(top_k, top_p)
    layer = sa.CFG_INSERTION_LAYER if args.cfg_insertion_layer is None else args.cfg_insertion_layer
    sa.check_cfg_insertion_layer(layer)
    check_seed(args.seed)
    S = schedule_len(aspect_ratio, pixels)
    sa.per_scale_list("--cfg", cfg, S, minimum=0.0)
    sa.per_scale_list("--tau", tau, S, minimum=0.0, strict=True)
    return dict(negative_prompt=sa.negative_text(args.negative_prompt), cfg=cfg, tau=tau, top_k=top_k, top_p=top_p,
                seed=args.seed, aspect_ratio=aspect_ratio, pixels=pixels, cfg_insertion_layer=layer,
                batched=bool(args.batched))


def default_pixels(args) -> str:
    """The budget of the model named (its own) or, for files, 1M."""
    from var_fast.hub import INFINITY_MODEL_NAMES
    return INFINITY_MODEL_NAMES[args.model][2] if args.model in INFINITY_MODEL_NAMES else "1M"


def schedule_length(args):
    from var_fast.infinity.schedules import scale_schedule
    return lambda aspect_ratio, pixels: len(scale_schedule(aspect_ratio, pixels or default_pixels(args)))


def load_kwargs(args) -> dict:
    return dict(text_encoder_offload=args.text_encoder_offload or "none", backend=getattr(args, "backend", "auto"),
                text_encoder_dtype=None if args.text_encoder_dtype in (None, "auto") else args.text_encoder_dtype)
