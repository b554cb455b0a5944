"""``var-fast sample`` for Infinity: images of text prompts, ``<prompt index:04d>_<n:03d>.png`` in --out, and
settings.json (the prompts and every setting), written as each batch is done. Image n of prompt p is image
p * per_prompt + n of the run: its random stream is keyed by (seed, that index), so the batch size changes
nothing, and image 0 is upstream's ``run_infinity.py --seed SEED`` for prompt 0."""
from __future__ import annotations

import os
import sys

from var_fast.cli.common import check_output_folder, command_line_device, save_png
from var_fast.cli.infinity_flags import (check_infinity_model_flags, infinity_sampling, load_kwargs,
                                         prompt_list, schedule_length)
from var_fast.cli.sample_output import check_earlier_run, clear_earlier_run, image_name, write_settings
from var_fast.precision import dtype_name


def run_infinity_sample(args) -> int:
    import var_fast
    from var_fast.infinity.text_encoder import require_transformers

    # everything that can be checked without the model, before it loads
    check_infinity_model_flags(args)
    prompts = prompt_list(args)
    kw = infinity_sampling(args, schedule_length(args))
    per_prompt = args.per_prompt or 1
    check_output_folder(args.out)
    check_earlier_run(args.out)
    device = command_line_device(args.device)
    require_transformers()

    sampler = var_fast.load(args.model, transformer=args.transformer, vae=args.vae, text_encoder=args.text_encoder,
                            device=device, dtype=args.dtype, **load_kwargs(args))
    pixels = kw["pixels"] or sampler.default_pixels
    height, width = sampler.image_size(kw["aspect_ratio"], pixels)
    files = [image_name(p, n, None) for p in range(len(prompts)) for n in range(per_prompt)]
    removed = clear_earlier_run(args.out, files)
    if removed:
        print(f"[var_fast] {args.out}: removed the {len(removed)} files of an earlier var-fast sample run there "
              f"(other files are kept)", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    settings = dict(model=args.model or "files", transformer=sampler.source[0], vae=sampler.source[1],
                    text_encoder=sampler.source[2], prompts=prompts, classes=list(range(len(prompts))),
                    per_class=per_prompt, per_prompt=per_prompt, image_size=[width, height], pixels=pixels,
                    **{k: v for k, v in kw.items() if k != "pixels"}, device=str(sampler.device),
                    dtype=dtype_name(sampler.dtype), backend=sampler.backend, text_encoder_dtype=dtype_name(sampler.text_encoder.dtype),
                    text_encoder_offload=sampler.text_encoder.offload, batch_size=args.batch_size, files=files,
                    complete=False)
    write_settings(args.out, settings)  # first: a run stopped half-way is still known as var_fast's
    flat = [p for p in prompts for _ in range(per_prompt)]  # image i is prompt i // per_prompt
    print(f"[var_fast] sampling {len(flat)} images of {width}x{height} ({len(prompts)} prompts x {per_prompt})",
          file=sys.stderr)
    done = 0
    for indices, images, _ in sampler.sample_batches(flat, batch_size=args.batch_size, **kw):
        for i, image in zip(indices, images.cpu()):
            save_png(image, os.path.join(args.out, files[i]))
        done += len(indices)
        print(f"[var_fast] {done}/{len(flat)} images", file=sys.stderr)
    write_settings(args.out, dict(settings, complete=True))
    print(f"[var_fast] wrote {len(flat)} images to {args.out}", file=sys.stderr)
    return 0
