"""``InfinitySampler``: text-to-image sampling with a loaded Infinity transformer, its BSQ VAE and the T5 text
encoder. Build it with ``var_fast.load("infinity-2b")`` or ``var_fast.load(transformer=..., vae=...,
text_encoder=...)``.

Seeds: image ``i`` of a call (``image_offset + i`` of the run) draws from its own generator seeded with
``image_seed(seed, image_offset + i)``: the run's seed itself for image 0, and a seed derived from (seed, i)
for the others. Each image is sampled alone by default (``batched=False``) and decoded alone, so it does not
depend on the batch it is in, and image 0 of seed ``s`` is upstream's ``run_infinity.py --seed s`` for that
prompt (float32, CPU: tests/test_infinity_end_to_end.py).

``backend="fast"`` samples with var_fast/infinity/fast_sampler.py instead: the same bits as the reference for
the same probabilities (greedy bits equal), drawn from var_fast's own stream keyed by (seed, scale, image
index), so an image does not depend on its batch, but is not upstream's ``--seed s`` image; batches always run
as one pass.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch

from ..labels import check_seed, derived_seed
from .memory import InfinityShapes, per_image_bytes
from .sampling_args import (CFG, CFG_INSERTION_LAYER, SAMPLING_PER_BITS, TAU, TOP_K, TOP_P, check_aspect_ratio,
                            check_batch_size, check_cfg_insertion_layer, check_pixels, check_sampling_per_bits,
                            check_top_k_top_p, negative_text, per_scale_list)
from .schedules import scale_schedule
from .text_encoder import check_prompts

MEMORY_FRACTION = 0.7  # of the free memory the automatic batch size may fill
BACKENDS = ("reference", "fast")


def image_seed(seed: int, index: int) -> int:
    """Image ``index``'s generator seed: ``seed`` for image 0 (upstream's g_seed), derived from (seed, index)
    for the others (in [0, 2**63) for every seed and index)."""
    return seed if index == 0 else derived_seed(seed, index)


class InfinitySampler:
    """An Infinity transformer, its BSQ VAE and a ``TextEncoder``, ready to sample."""

    def __init__(self, model, vae, text_encoder, *, device: torch.device, dtype: torch.dtype,
                 source: Tuple[str, ...] = ("<transformer>", "<vae>", "<text encoder>"), pixels: str = "1M",
                 backend: str = "reference"):
        self.model, self.vae, self.text_encoder = model.eval(), vae.eval(), text_encoder
        self.device, self.dtype = torch.device(device), dtype
        self.source = source
        self.default_pixels = check_pixels(pixels)
        self.max_batch_size: Optional[int] = None  # sample-fid: one pass per batch, never split
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self._fast = None  # the InfinityFastSampler, built on first use

    @property
    def config(self):
        return self.model.cfg

    @property
    def depth(self) -> int:
        return self.config.depth

    def shapes(self) -> InfinityShapes:
        c = self.config
        return InfinityShapes("loaded", depth=c.depth, width=c.embed_dim, heads=c.num_heads, bits=c.d_vae,
                              transformer_parameters=sum(p.numel() for p in self.model.parameters()),
                              block_parameters=sum(p.numel() for b in self.model.all_blocks() for p in b.parameters()),
                              vae_parameters=sum(p.numel() for p in self.vae.parameters()))

    def image_size(self, aspect_ratio: Union[float, str] = 1.0, pixels: Optional[str] = None) -> Tuple[int, int]:
        """(height, width) of the images of a schedule: the last scale's grid times the pixels per cell (the
        VAE's stride, twice that with spatial patchify: 16 for the published models)."""
        _, h, w = scale_schedule(aspect_ratio, check_pixels(pixels or self.default_pixels))[-1]
        patchify = self.config.d_vae == 4 * self.vae.codebook_dim
        cell = self.vae.cfg.downsample * (2 if patchify else 1)
        return h * cell, w * cell

    def __repr__(self) -> str:
        c = self.config
        return (f"InfinitySampler(depth={c.depth}, width={c.embed_dim}, bits={c.d_vae}, device={self.device}, "
                f"dtype={self.dtype}, text_encoder={self.text_encoder!r})")

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def auto_batch_size(self, schedule, cfg: bool = True) -> int:
        """Images per batched pass that fit in MEMORY_FRACTION of the free memory (the GPU's on CUDA, the
        available RAM on the CPU), one decoding reserved; per image: the KV cache and the last scale's
        activations (``var_fast.infinity.memory.per_image_bytes``, docs/infinity.md#memory)."""
        name = str(self.dtype).replace("torch.", "")
        kv, act, decode = per_image_bytes(self.shapes(), schedule, name, cfg, fast=self.backend == "fast")
        per_image = kv + act
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
        else:
            try:
                free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):
                return 1
        return max(1, int(MEMORY_FRACTION * free - decode) // per_image)

    def _decode_one(self, summed_codes: torch.Tensor) -> torch.Tensor:
        """One image's summed codes -> upstream's uint8 (1, H, W, 3) RGB, decoded alone: a batched
        convolution may round differently, and the uint8 truncation would turn that into a different pixel."""
        img = (self.vae.decode(summed_codes) + 1) / 2
        return img.permute(0, 2, 3, 1).mul_(255).to(torch.uint8)

    def check(self, prompts, *, negative_prompt=None, cfg=CFG, tau=TAU, top_k=TOP_K, top_p=TOP_P, seed=0,
              aspect_ratio=1.0, pixels=None, batch_size=None, cfg_insertion_layer=CFG_INSERTION_LAYER,
              sampling_per_bits=SAMPLING_PER_BITS, image_offset=0) -> dict:
        """Every argument of ``sample`` checked (ValueError naming the problem), before any work."""
        prompts = check_prompts(prompts)
        negative = negative_text(negative_prompt)
        check_aspect_ratio(aspect_ratio)
        schedule = scale_schedule(aspect_ratio, check_pixels(pixels or self.default_pixels))
        S = len(schedule)
        cfg_list = per_scale_list("cfg", cfg, S, minimum=0.0)
        tau_list = per_scale_list("tau", tau, S, minimum=0.0, strict=True)
        check_top_k_top_p(top_k, top_p)
        check_seed(seed)
        if isinstance(image_offset, bool) or not isinstance(image_offset, int) or image_offset < 0:
            raise ValueError(f"image_offset must be an integer >= 0, got {image_offset!r}")
        return dict(prompts=prompts, negative=negative, schedule=schedule, cfg_list=cfg_list, tau_list=tau_list,
                    layers=check_cfg_insertion_layer(cfg_insertion_layer, self.depth),
                    per_bits=check_sampling_per_bits(sampling_per_bits), batch_size=check_batch_size(batch_size))

    def sample(self, prompts: Union[str, Sequence[str]], *, return_bits: bool = False, **kwargs):
        """Images (N, 3, H, W) in [0, 1], one per prompt (upstream's uint8 RGB image / 255, so that saving
        it as 8-bit gives upstream's pixels), and with ``return_bits`` the bits of every scale
        [(N, 1, h, w, d)]. The arguments are ``sample_batches``'."""
        images, bits = [], []
        for _, batch_images, batch_bits in self.sample_batches(prompts, **kwargs):
            images.append(batch_images)
            bits.append(batch_bits)
        result = torch.cat(images)
        return (result, [torch.cat(scale) for scale in zip(*bits)]) if return_bits else result

    @torch.no_grad()
    def sample_batches(self, prompts: Union[str, Sequence[str]], *, negative_prompt: Optional[str] = None,
                       cfg: Union[float, Sequence[float]] = CFG, tau: Union[float, Sequence[float]] = TAU,
                       top_k: int = TOP_K, top_p: float = TOP_P, seed: Optional[int] = 0,
                       aspect_ratio: Union[float, str] = 1.0, pixels: Optional[str] = None,
                       batch_size: Optional[int] = None,
                       cfg_insertion_layer: Union[int, Sequence[int]] = CFG_INSERTION_LAYER,
                       sampling_per_bits: int = SAMPLING_PER_BITS, image_offset: int = 0,
                       batched: bool = False) -> Iterator[Tuple[List[int], torch.Tensor, List[torch.Tensor]]]:
        """(indices into prompts, images (b, 3, H, W) in [0, 1], bits per scale) per pass, as each is done
        (everything is checked, and every text encoded, before the first pass).

        prompts: a string or a list of strings of any lengths. negative_prompt: None (or "") uses the
        model's learned unconditional embedding for CFG; a text is encoded like a prompt. cfg, tau: one
        value or one per scale (upstream's cfg_list / tau_list). top_k, top_p: over each bit's two logits
        (0 disables). seed: None draws a random one; image i's stream is ``image_seed(seed, image_offset + i)``
        (module docstring). aspect_ratio: height/width (or "W:H"), snapped to the nearest published
        template; pixels: "0.06M", "0.25M", "0.60M" or "1M" (None: the model's own, 1M for infinity-2b).
        batch_size: images per call of the reference sampler (None: from free memory). cfg_insertion_layer: 0
        applies CFG to the logits, -k to the output of block depth-k. batched: False (default) runs each image
        alone, exactly upstream's B=1 run of its prompt with its seed, whatever the batch; True runs
        ``batch_size`` images in one pass, each still drawing from its own generator (faster on a GPU; float
        rounding then depends on the batch, so an image may differ from its B=1 run, rarely, in a bit).
        With backend "fast" every batch is one pass (``batched`` is then implied) and image i draws from
        (seed, image_offset + i): the same bits whatever the batch (module docstring).
        """
        a = self.check(prompts, negative_prompt=negative_prompt, cfg=cfg, tau=tau, top_k=top_k, top_p=top_p,
                       seed=seed, aspect_ratio=aspect_ratio, pixels=pixels, batch_size=batch_size,
                       cfg_insertion_layer=cfg_insertion_layer, sampling_per_bits=sampling_per_bits,
                       image_offset=image_offset)
        from .reference_sampler import infer_reference
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        prompts, negative, schedule = a["prompts"], a["negative"], a["schedule"]
        # every text first (one encoder pass per distinct text): with offload "free" the encoder is then freed
        texts = prompts + ([negative] if negative is not None else [])
        cond_all = self.text_encoder.encode(texts)
        cond = cond_all.select(range(len(prompts)))
        neg = cond_all.select([len(prompts)]) if negative is not None else None
        uses_cfg = any(c != 1 for c in a["cfg_list"])
        if self.backend == "fast":
            yield from self._fast_batches(prompts, cond, neg, schedule, a, top_k, top_p, seed, image_offset, uses_cfg)
            return
        # exact mode: every image is its own pass (memory of one image); batched: passes of ``chunk`` images
        chunk = a["batch_size"] or self.max_batch_size or (self.auto_batch_size(schedule, uses_cfg) if batched else 1)
        for start in range(0, len(prompts), chunk):
            idx = list(range(start, min(start + chunk, len(prompts))))
            seeds = [image_seed(seed, image_offset + i) for i in idx]
            with self._autocast():
                out = infer_reference(self.model, self.vae, cond.select(idx), schedule,
                                      negative=None if neg is None else neg.select([0] * len(idx)),
                                      cfg_list=a["cfg_list"], tau_list=a["tau_list"], top_k=top_k, top_p=top_p,
                                      cfg_insertion_layer=a["layers"], sampling_per_bits=a["per_bits"],
                                      image_seeds=seeds, per_image_passes=not batched, decode=False)
                images = torch.cat([self._decode_one(out.summed_codes[i:i + 1]) for i in range(len(idx))])
            yield idx, images.permute(0, 3, 1, 2).float().div_(255), list(out.bits)

    def fast_sampler(self):
        """The InfinityFastSampler of this model (built once: its CUDA graphs and caches are kept between calls)."""
        if self._fast is None:
            from .fast_sampler import InfinityFastSampler
            self._fast = InfinityFastSampler(self.model, self.vae, dtype=self.dtype)
        return self._fast

    def _fast_batches(self, prompts, cond, neg, schedule, a, top_k, top_p, seed, image_offset, uses_cfg):
        fast = self.fast_sampler()
        chunk = a["batch_size"] or self.max_batch_size or self.auto_batch_size(schedule, uses_cfg)
        for start in range(0, len(prompts), chunk):
            idx = list(range(start, min(start + chunk, len(prompts))))
            out = fast.sample(cond.select(idx), schedule, negative=None if neg is None else neg.select([0] * len(idx)),
                              cfg_list=a["cfg_list"], tau_list=a["tau_list"], top_k=top_k, top_p=top_p,
                              cfg_insertion_layer=a["layers"], seed=seed, image_offset=image_offset + start,
                              decode=False)
            images = torch.cat([self._decode_one(out.summed_codes[i:i + 1]) for i in range(len(idx))])
            yield idx, images.permute(0, 3, 1, 2).float().div_(255), list(out.bits)
