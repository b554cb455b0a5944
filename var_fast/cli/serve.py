"""``var-fast serve``: the page and the HTTP API over one model (``pip install var_fast[serve]``).

    var-fast serve                          # the bundled model on http://127.0.0.1:7860
    var-fast serve --model d16 --port 8000  # a published model
"""
from __future__ import annotations

import ipaddress
import json
import os
import sys

from var_fast.cli.common import (SamplingDefaults, add_model_flags, check_model_flags, positive_int, recommended)

DEFAULTS = SamplingDefaults(cfg=1.5, top_k=900, top_p=0.96)
INSTALL_HINT = "var-fast serve needs FastAPI and uvicorn: pip install 'var_fast[serve]' (or pip install fastapi uvicorn)"


def add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="serve a page and an HTTP API that batches concurrent requests")
    add_model_flags(s)
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 exposes it to the network)")
    s.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    s.add_argument("--backend", default="auto", choices=["auto", "reference", "fast"])
    s.add_argument("--max-batch", type=positive_int, default=None,
                   help="images per batched pass (default: what fits in 70%% of free GPU memory, at most 64; 16 on the CPU)")
    s.add_argument("--max-images", type=positive_int, default=8, help="images per request (default: 8)")
    s.add_argument("--max-queue", type=positive_int, default=64,
                   help="requests queued or running before new ones are answered 503 busy (default: 64)")
    s.add_argument("--batch-window-ms", type=float, default=20.0,
                   help="how long a pass waits for more requests to join it (default: 20)")
    s.add_argument("--max-upload-mb", type=float, default=8.0, help="largest uploaded image in MiB (default: 8)")


def class_names(info: dict, num_classes: int):
    names = info.get("class_names")
    if names and len(names) == num_classes:
        return list(names)
    if num_classes == 1000:
        from var_fast.default_model import ASSETS
        with open(os.path.join(ASSETS, "imagenet_classes.json")) as f:
            return json.load(f)["class_names"]
    return [f"class {i}" for i in range(num_classes)]


def _check_host_port(host: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {port}")
    try:
        if not ipaddress.ip_address(host).is_loopback:
            print(f"[var_fast] listening on {host}: reachable from other machines; there is no authentication",
                  file=sys.stderr)
    except ValueError:
        if host != "localhost":
            print(f"[var_fast] listening on {host}: reachable from other machines; there is no authentication",
                  file=sys.stderr)


def run_serve(args) -> int:
    try:
        import uvicorn

        from var_fast.serve.app import ModelInfo, create_app
    except ImportError as err:
        raise RuntimeError(f"{INSTALL_HINT} ({err})") from None
    import var_fast
    from var_fast.default_model import chosen_checkpoints
    from var_fast.serve.batcher import Batcher
    from var_fast.serve.preview import LatentPreview
    from var_fast.serve.requests import Limits

    check_model_flags(args)
    _check_host_port(args.host, args.port)
    if args.batch_window_ms < 0 or args.max_upload_mb <= 0:
        raise ValueError("--batch-window-ms must be >= 0 and --max-upload-mb > 0")
    rec = recommended(args)
    defaults = dict(cfg=float(rec.get("cfg", DEFAULTS.cfg)), top_k=int(rec.get("top_k", DEFAULTS.top_k)),
                    top_p=float(rec.get("top_p", DEFAULTS.top_p)))
    var_path, vae_path, model_info = chosen_checkpoints(args.var, args.vae, args.model)
    sampler = var_fast.load(var_path, vae_path, device=args.device, dtype=args.dtype, backend=args.backend)
    on_gpu = sampler.device.type == "cuda"
    max_batch = args.max_batch or (min(64, sampler._auto_batch_size()) if on_gpu else 16)
    limits = Limits(max_images=min(args.max_images, max_batch), max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
                    max_body_bytes=int(args.max_upload_mb * (1 << 20) * 3) + (1 << 20))
    if args.model:
        name, flags = f"var_{args.model}", f" --model {args.model}"
    elif args.var:
        name, flags = os.path.basename(args.var), f" --var {os.path.basename(args.var)} --vae {os.path.basename(args.vae)}"
    else:
        name, flags = model_info.get("name", "bundled"), ""
    info = ModelInfo(name=name, cli_flags=flags, class_names=class_names(model_info, sampler.num_classes),
                     image_size=sampler.image_size, patch_nums=list(sampler.patch_nums), defaults=defaults,
                     backend=sampler.backend, device=str(sampler.device), dtype=args.dtype, max_batch=max_batch)
    # CUDA: every pass padded to max_batch rows, so its matrix shapes (and cuBLAS's kernels) never change
    batcher = Batcher(sampler, max_batch=max_batch, max_queue=args.max_queue, window_s=args.batch_window_ms / 1000,
                      pad_to=max_batch if on_gpu else None, preview=LatentPreview.fit(sampler))
    app = create_app(batcher, info, limits)
    print(f"[var_fast] serving {name} ({sampler.backend} backend, {sampler.device}, up to {max_batch} images per pass) "
          f"on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        batcher.stop()
    return 0
