"""``Sampler``: class-conditional sampling, encoding and decoding on a loaded VAR + VQVAE pair."""
from __future__ import annotations

import contextlib
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from .native import extension as _ext
from .labels import Labels, check_sampling_args, check_seed, resolve_labels
from .models import VAR, VQVAE
from .precision import resolve_dtype
from .reference.autoregressive import autoregressive_infer_cfg, random_labels
from .schedules import Schedule

BACKENDS = ("auto", "reference", "fast")


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        _ext.announce("backend 'reference' (plain PyTorch, the upstream algorithm)")
        return "reference"
    ext = _ext.extension()
    if ext is None:
        if backend == "fast":
            _ext.require()
        _ext.announce(f"native extension unavailable ({_ext.load_error()}); using the reference backend")
        return "reference"
    if device.type == "cuda" and not _ext.cuda_kernels():
        if backend == "fast":
            raise RuntimeError("backend='fast' on CUDA needs var_fast built with CUDA kernels "
                               "(reinstall with a CUDA toolkit present, or VAR_FAST_CUDA=1)")
        _ext.announce("extension built without CUDA kernels; using the reference backend on CUDA")
        return "reference"
    _ext.announce(f"backend 'fast' (native {device.type.upper()} kernels)")
    return "fast"


class Sampler:
    """A VAR transformer with its VQVAE, ready to sample. Build it with ``var_fast.load``."""

    def __init__(self, var: VAR, vae: VQVAE, *, device: torch.device, dtype: Optional[torch.dtype] = None,
                 backend: str = "auto", source: Tuple[str, ...] = ("<var>", "<vae>"), channels_last: bool = False,
                 refiner: Optional[VAR] = None, draft_steps: Optional[int] = None):
        """``dtype``: None ("auto") is bfloat16 on CUDA, float32 on the CPU (``var_fast.precision``).
        ``channels_last``: the VQVAE decoder in channels-last memory format (converted on first use)."""
        self.var, self.vae = var.eval(), vae.eval()
        # collaborative decoding (CoDe): ``var`` drafts the first draft_steps scales, ``refiner`` the rest
        self.refiner = None if refiner is None else refiner.eval()
        if refiner is not None:
            from .collaborative import check_draft_steps, check_refiner
            check_refiner(var.config, refiner.config)
            if draft_steps is not None:
                check_draft_steps(draft_steps, len(var.patch_nums))
        self.draft_steps = draft_steps  # the pair's own N (fine-tuned pairs); None: sample() requires one
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.channels_last = channels_last
        self.backend = resolve_backend(backend, self.device)
        self.source = source
        self._fast = self._fast_refiner = None
        self.max_batch_size: Optional[int] = None  # fast backend: split larger batches (None: by free memory)

    # ---- properties --------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.var.num_classes

    @property
    def patch_nums(self) -> Tuple[int, ...]:
        return self.var.patch_nums

    @property
    def image_size(self) -> int:
        return self.vae.config.image_size

    def __repr__(self) -> str:
        c = self.var.config
        if self.refiner is not None:
            r = self.refiner.config
            return (f"Sampler(drafter depth={c.depth} width={c.embed_dim}, refiner depth={r.depth} width={r.embed_dim}, "
                    f"draft_steps={self.draft_steps}, classes={c.num_classes}, image={self.image_size}px, "
                    f"backend={self.backend!r}, device={self.device}, dtype={self.dtype})")
        return (f"Sampler(depth={c.depth}, width={c.embed_dim}, classes={c.num_classes}, image={self.image_size}px, "
                f"backend={self.backend!r}, device={self.device}, dtype={self.dtype})")

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _decode_fhat(self, f_hat: torch.Tensor) -> torch.Tensor:
        """f_hat (B, Cvae, h, w) -> float32 images in [0, 1]: the VQVAE decoder in the compute dtype
        (autocast, as the reference code runs it), channels-last when asked for."""
        if self.channels_last:
            if not getattr(self.vae, "_var_fast_channels_last", False):  # the decoder's convolutions only
                self.vae.post_quant_conv.to(memory_format=torch.channels_last)
                self.vae.decoder.to(memory_format=torch.channels_last)
                self.vae._var_fast_channels_last = True
            f_hat = f_hat.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            images = self.vae.fhat_to_img(f_hat).add_(1).mul_(0.5)
        return images.float().contiguous()

    def _fast_sampler(self):
        if self._fast is None:
            from .fast_sampler import FastSampler
            self._fast = FastSampler(self.var, self.vae, dtype=self.dtype)
            if self.refiner is not None:
                self._fast_refiner = FastSampler(self.refiner, self.vae, dtype=self.dtype)
        return self._fast

    def _fast_pair(self, draft_steps) -> dict:
        """FastSampler.sample's collaborative arguments (none for a single model)."""
        if self.refiner is None:
            return {}
        self._fast_sampler()
        return dict(refiner=self._fast_refiner, draft_steps=draft_steps)

    def sampling_schedules(self, top_k, temperature, draft_steps=None):
        """(top-k per scale, temperature per scale, N or None): checked as ``sample`` checks them."""
        from .schedules import per_scale
        S = len(self.patch_nums)
        top_ks, temps = per_scale("top_k", top_k, S), per_scale("temperature", temperature, S)
        if self.refiner is None:
            if draft_steps is not None:
                raise ValueError("draft_steps applies to a drafter/refiner pair (var_fast.load(..., refiner=...)); "
                                 "this sampler has one model")
            return top_ks, temps, None
        from .collaborative import check_draft_steps
        return top_ks, temps, check_draft_steps(draft_steps, S, self.draft_steps)

    def _auto_batch_size(self) -> int:
        """Images per pass that fit in 70% of the free GPU memory (no limit on the CPU)."""
        if self.device.type != "cuda":
            return 1 << 30
        c = self.var.config
        elem = torch.finfo(self.dtype).bits // 8
        last = self.patch_nums[-1] ** 2
        kv_widths = c.depth * c.embed_dim + (0 if self.refiner is None else self.refiner.depth * self.refiner.C)
        per_image = (kv_widths * 2 * 2 * c.L * elem                        # k and v caches, CFG-doubled
                     + 2 * last * c.vocab_size * 4 * 3                    # float32 logits and the sampler's work
                     + 2 * last * c.mlp_hidden * elem * 3                 # widest activations
                     + 64 * self.image_size ** 2 * self.vae.config.ch * 2)  # VQVAE decoder activations
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, int(0.7 * free) // per_image)

    # ---- sampling -----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, labels: Labels = None, *, batch_size: Optional[int] = None, cfg: float = 1.5,
               top_k: Schedule = 0, top_p: float = 0.0, seed: Optional[int] = None, more_smooth: bool = False,
               return_tokens: bool = False, image_offset: int = 0,
               on_scale: Optional[Callable[[int, int], None]] = None, temperature: Schedule = 1.0,
               draft_steps: Optional[int] = None,
               on_f_hat: Optional[Callable[[int, torch.Tensor], None]] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Images (B, 3, H, W) in [0, 1] of the given classes (and, with return_tokens, the per-scale
        tokens (B, pn*pn)).

        labels: an int (repeated ``batch_size`` times, default 1), a list or a LongTensor of classes;
        -1 is the unconditional class; None draws ``batch_size`` random classes. With the reference
        backend a seed reproduces upstream ``autoregressive_infer_cfg(B, labels, g_seed=seed, ...)``
        exactly; the fast backend draws from a counter-based generator keyed by (seed, image, token),
        so an image does not depend on the others in its batch: image b of this call is image
        ``image_offset + b`` of the seed's stream (split a large job into batches with it).
        ``on_scale(si, num_scales)`` is called after each scale (progress reporting), ``on_f_hat(si, f_hat)``
        with the accumulated f_hat of the batch (or chunk) so far (previews, read only). ``seed`` is None
        (random) or an integer with 0 <= seed < 2**63.

        ``top_k`` and ``temperature`` are one value or one per scale (``var_fast.schedules``; CoDe uses
        top_k=600 and temperature 1.1 on the first 7 scales, 1.0 after); the temperature divides the
        logits after top-k/top-p filtering. With a drafter/refiner pair (``var_fast.load(...,
        refiner=...)``, collaborative decoding) the drafter samples scales 0..draft_steps-1 and the
        refiner the rest; ``draft_steps`` defaults to a fine-tuned pair's own N and is required otherwise.
        With the reference backend and a seed the tokens are those of CoDe's
        ``autoregressive_infer_cfg_draft`` + ``autoregressive_infer_cfg_refine`` (czg1225/CoDe).
        """
        top_ks, temps, draft_steps = self.sampling_schedules(top_k, temperature, draft_steps)
        check_sampling_args(cfg, top_ks[0], top_p)
        check_seed(seed)
        label_B = resolve_labels(labels, self.num_classes, batch_size, self.device)
        if self.backend == "reference" and self.refiner is not None:
            from .reference.collaborative import collaborative_infer_cfg
            B = label_B.shape[0] if label_B is not None else batch_size or 1
            with self._autocast():
                f_hat, tokens = collaborative_infer_cfg(self.var, self.refiner, self.vae, label_B, B, seed, draft_steps,
                                                        cfg, top_ks, top_p, temps, more_smooth, on_scale)
            images = self._decode_fhat(f_hat)
        elif self.backend == "reference":
            rng = None
            if seed is not None:
                rng = torch.Generator(device=self.device)
                rng.manual_seed(int(seed))
            if label_B is None:
                label_B = random_labels(self.num_classes, batch_size or 1, self.device, rng)
            with self._autocast():
                f_hat, tokens = autoregressive_infer_cfg(self.var, self.vae, label_B, rng, cfg=cfg, top_k=top_ks,
                                                         top_p=top_p, more_smooth=more_smooth, on_scale=on_scale,
                                                         temperature=temps, on_f_hat=on_f_hat)
            images = self._decode_fhat(f_hat)
        else:
            if seed is None:
                seed = int(torch.randint(0, 2**62, (1,)).item())
            if label_B is None:
                g = torch.Generator(device=self.device)
                g.manual_seed(int(seed))
                label_B = random_labels(self.num_classes, batch_size or 1, self.device, g)
            chunk = self.max_batch_size or self._auto_batch_size()
            parts, token_parts = [], []
            for start in range(0, label_B.shape[0], chunk):  # images are independent of their batch
                f_hat, toks = self._fast_sampler().sample(label_B[start:start + chunk], seed=int(seed), cfg=cfg,
                                                          top_k=top_ks, top_p=top_p, more_smooth=more_smooth,
                                                          image_offset=image_offset + start, on_scale=on_scale,
                                                          temperature=temps, on_f_hat=on_f_hat,
                                                          **self._fast_pair(draft_steps))
                parts.append(self._decode_fhat(f_hat))
                token_parts.append(toks)
            images = torch.cat(parts)
            tokens = [torch.cat(scale) for scale in zip(*token_parts)]
        images = images.float()
        return (images, tokens) if return_tokens else images

    # ---- zero-shot editing ----------------------------------------------------------------------------
    def edit(self, images: torch.Tensor, keep_mask, labels: Labels = None, *, cfg: float = 4.0, top_k: Schedule = 900,
             top_p: float = 0.95, seed: Optional[int] = None, more_smooth: bool = False,
             return_tokens: bool = False, temperature: Schedule = 1.0,
             draft_steps: Optional[int] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, List[torch.Tensor]]]:
        """In-paint, out-paint or re-class ``images`` (B, 3, H, W) in [0, 1]: edited images (and, with
        return_tokens, the per-scale tokens: the input's where kept, the drawn ones elsewhere; without
        more_smooth the image is decoded from exactly these).

        keep_mask: (H, W) or (B, H, W), 1 where the input is kept, 0 where new content is generated, at
        pixel resolution (area-averaged per token, kept when > 0.5) or on the last scale's token grid
        (used as given). Build one with ``var_fast.editing.inpaint_mask`` / ``outpaint_mask`` /
        ``mask_from_image``. labels: None regenerates unconditionally (the "no class" label
        ``num_classes``, as the notebook's in-painting demo passes; its function itself would draw random
        classes for label_B=None), an int or one label per image edits towards that class.

        The input is encoded to multi-scale tokens; at every scale all positions are sampled, then the
        mask, resized bilinearly to the scale and thresholded (> 0.5), replaces the kept positions' code
        embeddings by the input's before f_hat is updated; scales of at most 3 tokens (pn * pn <= 3: the
        1x1 scale) are kept entirely, whatever the mask. With backend "reference" and a seed this is
        token for token upstream's ``autoregressive_infer_cfg_with_mask`` (demo_zero_shot_edit.ipynb)
        given the same token-grid mask; the fast backend draws image b's generated tokens from
        (seed, b, token). ``seed`` is None (random) or an integer with 0 <= seed < 2**63. ``temperature``
        and ``draft_steps`` as in ``sample``: with a drafter/refiner pair the kept tokens are
        teacher-forced in both models.
        """
        from .editing import edit_images
        return edit_images(self, images, keep_mask, labels, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed,
                           more_smooth=more_smooth, return_tokens=return_tokens, temperature=temperature,
                           draft_steps=draft_steps)

    # ---- encoding / decoding -------------------------------------------------------------------------
    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a float tensor (B, 3, H, W) in [0, 1], got {shape}")
        size = self.image_size
        if images.shape[-2:] != (size, size):
            raise ValueError(f"images must be {size}x{size} for this VQVAE, got {images.shape[-2]}x{images.shape[-1]}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
        return images.to(self.device, torch.float32)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Images (B, 3, H, W) in [0, 1] -> per-scale tokens [(B, pn*pn)] (upstream ``img_to_idxBl``)."""
        x = self._check_images(images).mul(2).sub_(1)
        if self.backend == "fast":
            return self._fast_sampler().encode(x)
        return self.vae.img_to_idx(x)

    @torch.no_grad()
    def decode(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-scale tokens [(B, pn*pn)] -> images (B, 3, H, W) in [0, 1]."""
        tokens = list(tokens)
        pns = self.patch_nums
        if len(tokens) != len(pns):
            raise ValueError(f"decode needs one token map per scale ({len(pns)} scales), got {len(tokens)}")
        B = tokens[0].shape[0]
        for si, (t, pn) in enumerate(zip(tokens, pns)):
            if tuple(t.shape) != (B, pn * pn):
                raise ValueError(f"tokens[{si}] must have shape ({B}, {pn * pn}), got {tuple(t.shape)}")
            if t.is_floating_point():
                raise ValueError(f"tokens[{si}] must be an integer tensor, got {t.dtype}")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.vae.vocab_size):
                raise ValueError(f"tokens[{si}] has indices outside [0, {self.vae.vocab_size})")
        tokens = [t.to(self.device, torch.long) for t in tokens]
        return self._decode_fhat(self.vae.quantize.idx_to_fhat(tokens))  # the quantizer in float32
