"""``var-fast sample-fid``: the 50-images-per-class sample set for FID, resumable, on one process or many.

    var-fast sample-fid --var var_d16.pth --vae vae_ch160v4096z32.pth --out fid/d16 --npz
    var-fast sample-fid --model infinity-2b --prompts prompts.txt --per-prompt 4 --out geneval/  # Infinity
    torchrun --nproc_per_node=8 -m var_fast.cli sample-fid --var ... --vae ... --out fid/d16 --npz
"""
from __future__ import annotations

import os

from var_fast.cli.common import (SamplingDefaults, add_classes_flag, add_model_flags, add_runtime_flags,
                                 add_sampling_flags, check_model_flags, check_output_file, check_output_folder,
                                 pair_flags, positive_int, process_device, sampling_flags,
                                 temperature_flag)
from var_fast.cli.fid_session import announce_job, run_in_process_group
from var_fast.cli.infinity_flags import add_infinity_flags, check_var_run, is_infinity_run
from var_fast.precision import dtype_name

DEFAULTS = SamplingDefaults(cfg=1.5, top_k=900, top_p=0.96)


def add_sample_fid_parser(sub) -> None:
    p = sub.add_parser("sample-fid", help="sample a resumable FID set (N PNGs + .npz), also under torchrun",
                       description="Image i (class classes[i // per-class]) goes to OUT/{i:06d}.png; its random "
                                   "numbers depend only on (seed, i). Restart the same command to resume; under "
                                   "torchrun each process samples every WORLD_SIZE-th batch.")
    add_model_flags(p, infinity=True)
    p.add_argument("--out", required=True, help="output folder of the PNGs; --npz writes OUT.npz beside it")
    p.add_argument("--per-class", type=positive_int, default=None, help="images per class (default: 50)")
    add_classes_flag(p, "every class")
    add_sampling_flags(p, DEFAULTS)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per forward pass (default 32; Infinity: 1); part of the run's settings: rounding in "
                        "the model depends on it")
    p.add_argument("--npz", action="store_true", help="pack all images into OUT.npz (arr_0: N x H x W x 3 uint8)")
    add_runtime_flags(p, device_help="; under torchrun each process takes the GPU of its LOCAL_RANK",
                      backend_help="; reference samples one image per pass with a generator seeded from (seed, i), "
                                   "slow")
    p.add_argument("--cpu-threads", type=positive_int, default=1,
                   help="intra-op threads of each process on the CPU (default 1); part of the run's settings: "
                        "the CPU's float reductions depend on the thread count. Scale a CPU run with "
                        "torchrun --nproc_per_node instead")
    add_infinity_flags(p, prompt_flag=False)


def run_sample_fid(args) -> int:
    from var_fast import __version__, load
    from var_fast.default_model import chosen_checkpoints
    from var_fast.fid.distributed import torchrun_ranks
    from var_fast.fid.files import checkpoint_fingerprint, npz_path
    from var_fast.fid.sampling import FidJob, format_classes, parse_classes

    if is_infinity_run(args):
        from var_fast.cli.sample_fid_infinity import run_infinity_sample_fid
        return run_infinity_sample_fid(args)
    # everything that can be checked without the model, before it loads
    check_var_run(args)
    check_model_flags(args)
    args.batch_size = args.batch_size or 32
    args.per_class = args.per_class or 50
    cfg, top_k, top_p = sampling_flags(args, DEFAULTS)
    temperature, pair = temperature_flag(args), pair_flags(args)
    check_output_folder(args.out)
    if args.npz:
        check_output_file(npz_path(args.out), "--npz")
    if args.classes:
        parse_classes(args.classes)  # the syntax; the range once the model is known
    rank, world, local_rank = torchrun_ranks()
    device = process_device(args.device, local_rank, world)

    if rank:
        os.environ["VAR_FAST_QUIET"] = "1"  # one "which backend" line, not one per process
    var_path, vae_path, _ = chosen_checkpoints(args.var, args.vae, args.model, announce=rank == 0)

    def prepare(group):
        sampler = load(var_path, vae_path, device=device, dtype=args.dtype, backend=args.backend, **pair)
        classes = (parse_classes(args.classes, sampler.num_classes) if args.classes
                   else tuple(range(sampler.num_classes)))
        job = FidJob(classes, args.per_class, args.batch_size, args.seed, cfg, top_k, top_p, temperature,
                     pair.get("draft_steps"))
        manifest = None
        if group.is_main:
            settings = dict(var=checkpoint_fingerprint(var_path), vae=checkpoint_fingerprint(vae_path),
                            classes=format_classes(classes), per_class=job.per_class, cfg=cfg, top_k=top_k,
                            top_p=top_p, seed=job.seed, batch_size=job.batch_size, dtype=dtype_name(sampler.dtype),
                            backend=sampler.backend, device=device.type,
                            cpu_threads=args.cpu_threads if device.type == "cpu" else None)
            if temperature != 1.0:  # recorded only when used: runs made before these options still resume
                settings["temperature"] = temperature
            if sampler.refiner is not None:  # a resume with another pair or N is refused
                settings.update(refiner=checkpoint_fingerprint(sampler.source[2]), draft_steps=job.draft_steps)
            manifest = dict(command="var-fast sample-fid", var_fast=__version__, images=job.total,
                            var_path=os.path.abspath(var_path), vae_path=os.path.abspath(vae_path),
                            settings=settings)
            announce_job(job.total, f"{len(classes)} classes x {job.per_class}", args.out, world, job.batch_size)
        return sampler, job, manifest

    return run_in_process_group(device, args.cpu_threads, args.out, args.npz, prepare)
