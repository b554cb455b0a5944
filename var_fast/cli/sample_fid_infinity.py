"""``var-fast sample-fid --prompts FILE`` for Infinity: image i of prompt i // per_prompt to OUT/{i:06d}.png,
resumable, on one process or many (torchrun), with the settings (the prompts' fingerprint among them) in
OUT/sample-fid.json: a resume with other settings or prompts is refused."""
from __future__ import annotations

import os

from var_fast.cli.common import check_output_file, check_output_folder, process_device
from var_fast.cli.fid_session import announce_job, run_in_process_group
from var_fast.cli.infinity_flags import check_infinity_model_flags, infinity_sampling, load_kwargs, schedule_length
from var_fast.precision import dtype_name


def run_infinity_sample_fid(args) -> int:
    from var_fast import __version__, load
    from var_fast.fid.distributed import torchrun_ranks
    from var_fast.fid.files import npz_path, path_fingerprint
    from var_fast.fid.prompt_job import PromptJob
    from var_fast.infinity.prompts import prompts_fingerprint, read_prompts
    from var_fast.infinity.text_encoder import require_transformers

    # everything that can be checked without the model, before it loads
    check_infinity_model_flags(args)
    if args.prompts is None:
        raise ValueError("sample-fid with an Infinity model needs --prompts FILE (one prompt per line)")
    prompts = read_prompts(args.prompts)
    kw = infinity_sampling(args, schedule_length(args))
    seed = kw.pop("seed")
    check_output_folder(args.out)
    if args.npz:
        check_output_file(npz_path(args.out), "--npz")
    require_transformers()
    rank, world, local_rank = torchrun_ranks()
    device = process_device(args.device, local_rank, world)
    if rank:
        os.environ["VAR_FAST_QUIET"] = "1"

    def prepare(group):
        sampler = load(args.model, transformer=args.transformer, vae=args.vae, text_encoder=args.text_encoder,
                       device=device, dtype=args.dtype, **load_kwargs(args))
        kw["pixels"] = kw["pixels"] or sampler.default_pixels
        job = PromptJob(tuple(prompts), args.per_prompt or 1, args.batch_size or 1, seed, kw)
        manifest = None
        if group.is_main:
            transformer, vae, text_encoder = sampler.source
            settings = dict(transformer=path_fingerprint(transformer), vae=path_fingerprint(vae),
                            text_encoder=path_fingerprint(text_encoder), prompts=prompts_fingerprint(prompts),
                            per_prompt=job.per_prompt, seed=seed, batch_size=job.batch_size,
                            **{k: v for k, v in kw.items()}, dtype=dtype_name(sampler.dtype), backend=sampler.backend,
                            text_encoder_dtype=dtype_name(sampler.text_encoder.dtype), device=device.type,
                            cpu_threads=args.cpu_threads if device.type == "cpu" else None)
            manifest = dict(command="var-fast sample-fid (Infinity)", var_fast=__version__, images=job.total,
                            transformer_path=os.path.abspath(transformer), vae_path=os.path.abspath(vae),
                            text_encoder_path=os.path.abspath(text_encoder), prompts_file=os.path.abspath(args.prompts),
                            settings=settings)
            announce_job(job.total, f"{len(prompts)} prompts x {job.per_prompt}", args.out, world, job.batch_size)
        return sampler, job, manifest

    return run_in_process_group(device, args.cpu_threads, args.out, args.npz, prepare)
