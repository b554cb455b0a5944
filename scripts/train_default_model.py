#!/usr/bin/env python
"""Train the bundled default model: a small VQVAE and a small VAR on the procedural shapes set.

    python scripts/train_default_model.py                 # the bundled files (CPU, 2 cores: see README)
    python scripts/train_default_model.py --quick --out-dir /tmp/vf_default   # a minute, to debug

Stage 1 trains the VQVAE: the reference encoder/decoder at width 64 with ch_mult (1,1,1,1)
(downsample 8: 64 px images -> 8x8 latents), a 512-code vocabulary and the multi-scale residual
quantizer over patch_nums (1,2,3,4,6,8). Phase A trains it as a plain autoencoder with small batches (most of the
learning, at the lowest cost), phase B as the VQVAE with the reference quantizer objective
(straight-through f_hat over all scales, codebook loss + 0.25 x commitment), restarting unused
codes from encoder residuals. Reconstruction loss (--vae-loss edge-lowpass, the default): L1 + L2, plus
an edge term (L1 of the finite differences: corners and straight edges) and a low-pass term (L1 of
8x8-average-pooled images: the colour jitter and background gradient, which L1 + L2 over all pixels
barely notices; docs/default_model.md has the diagnosis). Stage 2 encodes a fixed set of
images to tokens (a cached set made by the same encoder is extended, not recomputed, when
--var-images asks for more), and --val-images held-out images from another stream. Stage 3 trains a
VAR on them by teacher forcing (cross-entropy over all scales, 10% of the labels dropped to the
unconditional class for classifier-free guidance) and logs the held-out loss per scale every
--val-every steps: a training loss far below it means the VAR memorises its token set (the first
retrain's did: docs/default_model.md). --var-init fine-tunes a trained VAR instead; with --var-deepen
the trained VAR may have fewer blocks than --var-depth (the new ones start as the identity); with
--var-rescale it may have been trained with other --patch-nums (its position and level embeddings are carried
over to the new scales: ``rescaled_state_dict``; the token cache is re-encoded for the new scales). With
--var-self-correction the VAR also learns to carry on from coarse tokens it drew itself (Infinity's
bitwise self-correction, for index tokens: ``self_correction_batch``; --var-self-correction-scales: only
at those scales).

Why width 64 and not the reference's ch_mult (1,1,2,2,4) at width 32: GroupNorm has 32 groups, so
at width 32 every full-resolution norm is an instance norm that erases each channel's mean and
scale per image; the decoder's last norm then cannot pass colours at all. Width 64 (2 channels per
group) can, and a flat ch_mult keeps the weights small. Why downsample 8 and not 16: a 4x4 latent
grid at 64 px gives every token a 16x16 pixel patch and the decoder draws blobs (a heart, a square
and a disk become alike); at 8x8 the reconstructions keep corners and holes.

Resumable: with --save-every N every stage saves its state (model, optimizer, step, data generator)
in --state-dir, the tokens are cached there, and --resume continues from it; --log-file appends the
log (the bundled model's is scripts/logs/train_default_model.log). Stage 1b (--dec-steps, with
--vae-checkpoint or after stage 1) fine-tunes only the decoder side with an added edge loss and
low-pass colour loss (optionally a loss on the foreground's and background's mean colours, --colour-weight,
and a patch discriminator's adversarial loss, --disc-weight): the encoder and codebook stay frozen, so a VAR
trained on the tokens stays valid.
The figures the model is judged by come from scripts/eval_default_model.py (docs/default_model.md).

Both models are saved exactly as the reference saves them, ``torch.save(model.state_dict(), path)``
with the reference key layout; ``var_fast.checkpoint`` reads their configuration back off the
weights. Everything is seeded: the same command on the same machine gives the same files.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

# Idle OpenMP threads sleep instead of spinning: on a shared machine a spinning thread waits for a
# descheduled one at every barrier and a step gets several times slower. Must precede `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from var_fast.datasets import CLASS_NAMES, NUM_CLASSES, shapes_batch  # noqa: E402
from var_fast.datasets.shapes import shapes_batch_with_params  # noqa: E402
from var_fast.datasets.shape_stats import eroded, foreground_background  # noqa: E402
from var_fast.models import VAR, VARConfig, VQVAE, VQVAEConfig  # noqa: E402
from var_fast.models.quantizer import MultiScaleQuantizer  # noqa: E402
from var_fast.models.vae_blocks import AttnBlock, ResnetBlock  # noqa: E402
from var_fast.reference.autoregressive import autoregressive_infer_cfg  # noqa: E402
from var_fast.reference.edit import TeacherForcing  # noqa: E402
from nearest_render import nearest_renders  # noqa: E402
from patch_discriminator import PatchDiscriminator, discriminator_hinge_loss, generator_hinge_loss  # noqa: E402

VAR_FILE, VAE_FILE, INFO_FILE = "default_var.pth", "default_vae.pth", "default_model.json"
VAR_LAST_FILE = "default_var_last.pth"  # with weight averaging: the VAR after the last step
VAE_SNAPSHOT = "vae_snapshot.pth"  # in --state-dir: the VQVAE at its last save, reference format


LOG_FILES: List[str] = []  # --log-file: every line is appended there too (kept across resumed runs)


def log(msg: str) -> None:
    line = f"[{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}Z] {msg}"
    print(line, flush=True)
    for path in LOG_FILES:
        with open(path, "a") as fh:
            fh.write(line + "\n")


# ---- resumable training state --------------------------------------------------------------------
def save_state(path: str, **state) -> None:
    """Model and optimizer state dicts, the step and the data generator's state, written atomically
    (tensors and plain containers only, so that resuming loads it with weights_only=True)."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def edge_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the images' horizontal and vertical finite differences: it weighs every edge
    pixel as much as the L1/L2 terms weigh a whole flat area, which is what keeps corners and straight
    edges sharp (plain L1 + L2 is content with a wavy, blurred edge)."""
    return (F.l1_loss(rec[..., :, 1:] - rec[..., :, :-1], x[..., :, 1:] - x[..., :, :-1])
            + F.l1_loss(rec[..., 1:, :] - rec[..., :-1, :], x[..., 1:, :] - x[..., :-1, :]))


def lowpass_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between 8x8-average-pooled images: the colours of flat areas and the background gradient are
    low-frequency and small (a few hundredths of jitter), so plain L1 + L2 over all pixels barely
    notices a decoder that draws every image in the mean colour; this weighs them on their own."""
    return F.l1_loss(F.avg_pool2d(rec, 8), F.avg_pool2d(x, 8))


def colour_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the mean RGB of the foreground and of the background of ``rec`` and of ``x``, both areas
    read off the training image ``x`` as ``colour_features`` reads them (``foreground_background``). The low-pass
    term weighs these colours mixed with the shape's edges; this weighs the colour jitter of the two areas
    alone, a few hundredths that a decoder drawing every shape in one mean colour would otherwise keep."""
    with torch.no_grad():
        areas = foreground_background(x)  # (B, 1, H, W) each
    loss = rec.new_zeros(())
    for area in areas:
        w = area.to(rec.dtype)
        n = w.sum(dim=(2, 3)).clamp_min(1)
        loss = loss + F.l1_loss((rec * w).sum(dim=(2, 3)) / n, (x * w).sum(dim=(2, 3)) / n)
    return loss


LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def flat_area_loss(rec: torch.Tensor) -> torch.Tensor:
    """Mean |Laplacian| of ``rec``'s channels inside its own foreground and background, each eroded by 2 px (away
    from the edges; the image's outermost pixels left out; both areas read off ``rec`` itself as
    ``foreground_background`` reads them). A render is flat inside its shape and a linear gradient behind it, both
    of Laplacian 0, so this charges only blotches: texture a decoder draws into a flat area. The areas are the
    drawing's own, not the training image's: where the VAR's tokens moved the shape, a loss on the training image's
    areas would darken a drawn shape wherever the image had background."""
    with torch.no_grad():
        inside = torch.cat([eroded(area, 2) for area in foreground_background(rec)], dim=1).amax(dim=1, keepdim=True)
    C = rec.shape[1]
    # no padding: a padded border would give a linear gradient a Laplacian there
    lap = F.conv2d(rec, LAPLACIAN.to(rec).expand(C, 1, 3, 3), groups=C)
    inside = inside[..., 1:-1, 1:-1]
    return (lap.abs() * inside).sum() / (C * inside.sum()).clamp_min(1)


def adaptive_adversarial_weight(pixel_loss: torch.Tensor, adversarial_loss: torch.Tensor,
                                last_layer: torch.Tensor) -> float:
    """VQGAN's balance of the two losses: the ratio of their gradients' norms at the decoder's last layer, so
    the adversarial term pulls on the decoder as hard as the pixel losses do (times --disc-weight), whatever
    the discriminator's current scale."""
    g_pixel, = torch.autograd.grad(pixel_loss, last_layer, retain_graph=True)
    g_adv, = torch.autograd.grad(adversarial_loss, last_layer, retain_graph=True)
    return float((g_pixel.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4))


def reconstruction_terms(rec: torch.Tensor, x: torch.Tensor, args) -> dict:
    """name -> (weight, loss) of the VQVAE stage's reconstruction objective (--vae-loss)."""
    terms = {"rec": (1.0, F.l1_loss(rec, x) + F.mse_loss(rec, x))}
    if args.vae_loss == "edge-lowpass":
        terms["edge"] = (args.edge_weight, edge_loss(rec, x))
        terms["low-pass"] = (args.lowpass_weight, lowpass_loss(rec, x))
    return terms


def cosine_lr(step: int, total: int, peak: float, warmup: int, final_ratio: float = 0.05) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


# ---- stage 1: VQVAE ------------------------------------------------------------------------------
def quantize_for_training(quant: MultiScaleQuantizer, f: torch.Tensor, beta: float
                          ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor], List[torch.Tensor]]:
    """The reference training forward of the multi-scale quantizer.

    Returns the straight-through f_hat (its value is the quantized sum over all scales, its gradient
    goes to the encoder unchanged), the VQ loss (codebook + beta * commitment, averaged over scales),
    the per-scale token indices and the per-scale residual vectors that were quantized (for restarts).
    """
    B, C, H, W = f.shape
    pns = quant.v_patch_nums
    S = len(pns)
    f_no_grad = f.detach()
    f_rest = f_no_grad.clone()
    f_hat = torch.zeros_like(f_rest)
    vq_loss = f.new_zeros(())
    indices, residuals = [], []
    for si, pn in enumerate(pns):
        rest = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != S - 1 else f_rest
        z_NC = rest.permute(0, 2, 3, 1).reshape(-1, C)
        idx_N = quant.nearest_code(z_NC)
        h = quant.embedding(idx_N.view(B, pn, pn)).permute(0, 3, 1, 2)
        if si != S - 1:
            h = F.interpolate(h, size=(H, W), mode="bicubic")
        h = quant.phi(si, S)(h.contiguous())
        f_hat = f_hat + h
        f_rest = f_rest - h.detach()
        # the codebook and Phi learn to reach f; the encoder commits to f_hat
        vq_loss = vq_loss + beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f_no_grad)
        indices.append(idx_N)
        residuals.append(z_NC)
    f_st = (f_hat.detach() - f_no_grad) + f
    return f_st, vq_loss / S, indices, residuals


def init_vae(vae: VQVAE) -> None:
    """Residual blocks and attention start as the identity (their last layer at zero): the
    skip path carries the signal from the first step, which trains much faster."""
    for m in vae.modules():
        if isinstance(m, ResnetBlock):
            nn.init.zeros_(m.conv2.weight)
            nn.init.zeros_(m.conv2.bias)
        elif isinstance(m, AttnBlock):
            nn.init.zeros_(m.proj_out.weight)
            nn.init.zeros_(m.proj_out.bias)


def train_vae(args, device: torch.device) -> VQVAE:
    """Phase A: the encoder/decoder as a plain autoencoder (no quantizer; small batches, many
    steps). Phase B: the whole VQVAE with its multi-scale quantizer."""
    torch.manual_seed(args.seed)
    cfg = VQVAEConfig(vocab_size=args.vocab, z_channels=args.cvae, ch=args.vae_ch, ch_mult=tuple(args.vae_ch_mult),
                      num_res_blocks=args.vae_res_blocks, using_sa=True, using_mid_sa=True,
                      patch_nums=args.patch_nums)
    if cfg.image_size != args.image_size:
        raise SystemExit(f"patch_nums {args.patch_nums} with downsample {cfg.downsample} gives {cfg.image_size} px, "
                         f"not --image-size {args.image_size}")
    vae = VQVAE(cfg).to(device)
    init_vae(vae)
    vae.train()
    quant = vae.quantize
    log(f"VQVAE: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters, {cfg}")
    opt = torch.optim.Adam(vae.parameters(), lr=args.vae_lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(args.seed + 1)
    total = args.vae_ae_steps + args.vae_steps
    state_path = os.path.join(args.state_dir, "vae_state.pt")
    hits_ema = torch.zeros(args.vocab, device=device)
    start, restarted = 0, 0  # start: steps done over both phases
    if args.resume and os.path.exists(state_path):
        st = load_state(state_path)
        vae.load_state_dict(st["vae"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        hits_ema.copy_(st["hits_ema"])
        start, restarted = st["step"], st["restarted"]
        log(f"VQVAE: resumed from {state_path} at step {start}")

    def checkpoint(done: int) -> None:
        if args.save_every and done % args.save_every == 0:
            save_state(state_path, vae=vae.state_dict(), opt=opt.state_dict(), gen=gen.get_state(), step=done,
                       hits_ema=hits_ema.cpu(), restarted=restarted)
            # the weights alone in the reference format, to measure interim reconstructions with
            # scripts/eval_default_model.py --vae-only (--no-quant during the autoencoder phase)
            save_reference_format(vae, os.path.join(args.state_dir, VAE_SNAPSHOT))
    t0 = time.time()
    avg: dict = {}

    def reconstruction_step(step: int, x: torch.Tensor, f_dec: torch.Tensor, extra: torch.Tensor) -> str:
        set_lr(opt, cosine_lr(step, total, args.vae_lr, warmup=min(50, total // 10 + 1)))
        rec = vae.decoder(vae.post_quant_conv(f_dec))
        terms = reconstruction_terms(rec, x, args)
        opt.zero_grad(set_to_none=True)
        (sum(w * v for w, v in terms.values()) + extra).backward()
        opt.step()
        for name, (_, v) in terms.items():  # running means: single batches of 8 are noisy
            avg[name] = v.item() if name not in avg else 0.95 * avg[name] + 0.05 * v.item()
        return " ".join(f"{name} {avg[name]:.4f}" for name in terms)

    for step in range(start, args.vae_ae_steps):
        img, _ = shapes_batch(args.vae_ae_batch, gen, args.image_size)
        x = img.to(device).mul(2).sub(1)
        losses = reconstruction_step(step, x, vae.quant_conv(vae.encoder(x)), x.new_zeros(()))
        if step % args.log_every == 0 or step == args.vae_ae_steps - 1:
            log(f"vae (autoencoder) step {step:5d}/{args.vae_ae_steps} {losses} "
                f"({(time.time() - t0) / (step + 1 - start):.2f} s/step)")
        checkpoint(step + 1)

    t0, first = time.time(), max(0, start - args.vae_ae_steps)
    for step in range(first, args.vae_steps):
        img, _ = shapes_batch(args.vae_batch, gen, args.image_size)
        x = img.to(device).mul(2).sub(1)
        f = vae.quant_conv(vae.encoder(x))
        if step == 0:  # start the codebook on actual features: their averages over every scale's cells
            with torch.no_grad():
                feats = torch.cat([F.interpolate(f, size=(pn, pn), mode="area").permute(0, 2, 3, 1).reshape(-1, f.shape[1])
                                   for pn in args.patch_nums])
                quant.embedding.weight.copy_(feats[torch.randint(len(feats), (args.vocab,), generator=gen)] * 0.5)
        f_st, vq_loss, indices, residuals = quantize_for_training(quant, f, beta=0.25)
        losses = reconstruction_step(args.vae_ae_steps + step, x, f_st, vq_loss)
        with torch.no_grad():
            hits = torch.bincount(torch.cat(indices), minlength=args.vocab).float()
            hits_ema.mul_(0.9).add_(hits, alpha=0.1)
            # dead-code restart: codes nobody picked for a while take the place of random residuals
            if step % 10 == 9 and step < 0.7 * args.vae_steps:
                dead = (hits_ema < 0.02).nonzero().flatten()
                if dead.numel():
                    pool = torch.cat(residuals)
                    pick = torch.randint(len(pool), (dead.numel(),), generator=gen).to(device)
                    quant.embedding.weight[dead] = pool[pick] + 0.01 * torch.randn(
                        dead.numel(), pool.shape[1], generator=gen).to(device)
                    hits_ema[dead] = 0.1
                    restarted += dead.numel()
        if step % args.log_every == 0 or step == args.vae_steps - 1:
            used = (hits_ema > 0.02).float().mean().item() * 100
            log(f"vae (VQ) step {step:5d}/{args.vae_steps} {losses} vq {vq_loss.item():.4f} "
                f"codes used {used:5.1f}% restarted {restarted} ({(time.time() - t0) / (step + 1 - first):.2f} s/step)")
        checkpoint(args.vae_ae_steps + step + 1)
    vae.eval()
    return vae


def decoder_side(vae: VQVAE) -> dict:
    """The weights stage 1b trains (post_quant_conv and decoder), as a state dict."""
    return {k: v for k, v in vae.state_dict().items() if k.startswith(("post_quant_conv.", "decoder."))}


def load_var_for_decoder(args, vae: VQVAE, device: torch.device) -> VAR:
    """The --var-init VAR (its layout read off the weights, checked against the VQVAE, frozen) whose samples
    stage 1b decodes."""
    from var_fast.checkpoint import check_pair, load_strict, read_state_dict, var_config_from_state_dict
    sd = read_state_dict(args.var_init, "VAR")
    var_cfg = var_config_from_state_dict(sd, args.var_init, patch_nums=args.patch_nums)
    check_pair(var_cfg, vae.config, args.var_init, args.vae_checkpoint or "the VQVAE trained here")
    var = VAR(var_cfg).to(device)
    load_strict(var, sd, args.var_init, "VAR")
    log(f"decoder: decoding samples of the VAR {args.var_init}")
    return var.eval().requires_grad_(False)


def sampled_fine_scales_fhat(vae: VQVAE, var: VAR, tokens: List[torch.Tensor], labels: torch.Tensor, k: int,
                             gen: torch.Generator, args) -> torch.Tensor:
    """f_hat whose first k scales are the image's own tokens and the rest the VAR's draws (cfg, top-k, top-p as
    recommended: --cfg, --top-k, --top-p; with --dec-more-smooth the drawn scales enter f_hat as upstream's
    more_smooth mixes them, Gumbel-softmax weighted code embeddings); k = all scales gives the image's own f_hat."""
    S = len(tokens)
    if k >= S:
        return vae.quantize.idx_to_fhat(tokens)
    keep = [torch.full_like(t, si < k, dtype=torch.bool) for si, t in enumerate(tokens)]
    forcing = TeacherForcing(tokens, keep, vae.quantize.embedding.weight)
    f_hat, _ = autoregressive_infer_cfg(var, vae, labels, gen, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p,
                                        teacher_force=forcing, more_smooth=getattr(args, "dec_more_smooth", False))
    return f_hat


def discriminator_state_problem(path: str, layers: int, classes: bool) -> str:
    """What keeps the decoder state file ``path`` from starting a discriminator of this shape ('' if nothing)."""
    if not os.path.isfile(path):
        return "no such file"
    try:
        st = load_state(path)
    except Exception as e:  # not a torch file, or one that needs unpickling code
        return f"not a decoder state ({type(e).__name__}: {e})"
    if not isinstance(st, dict) or "disc" not in st:
        return "holds no discriminator (saved by a decoder run without --disc-weight?)"
    want = PatchDiscriminator(layers=layers, num_classes=NUM_CLASSES if classes else 0).state_dict()
    have = st["disc"]
    if sorted(have) != sorted(want) or any(have[k].shape != want[k].shape for k in want):
        return (f"its discriminator has another shape than --disc-layers {layers}"
                f"{' --disc-classes' if classes else ''} asks for")
    return ""


def finetune_decoder(vae: VQVAE, args, device: torch.device) -> VQVAE:
    """Stage 1b: train only the decoder side (post_quant_conv + decoder) of a trained VQVAE on its own
    quantized latents. The encoder, codebook and Phi stay frozen, so every image keeps its tokens: a
    VAR trained on them stays valid, while the decoder learns to draw sharper edges and the background
    gradient from the same tokens. Resumable (``--resume``): the state is saved every --save-every steps.

    With --dec-sampled-scales K ..., every step draws one K: the first K scales of the batch are its own
    tokens and the rest the --var-init VAR's samples, and the decoder is taught to draw the training image
    from that f_hat (a decoder that straightens what the VAR's independently drawn fine tokens bend).
    --colour-weight adds ``colour_loss`` (the two areas' mean colours), --flat-weight ``flat_area_loss`` (texture
    inside the drawing's flat areas); --disc-weight an adversarial loss: a
    patch discriminator (scripts/patch_discriminator.py), trained beside the decoder on the renders against
    the decoder's drawings, judges the decoder from --disc-start on (--disc-layers: its patch size; --disc-classes:
    it judges a drawing as a render of its class). With --dec-pixel-from K0, a step whose f_hat keeps fewer than
    K0 of the image's own scales drops the pixel-exact terms (L1 + L2, edge): the VAR's coarse draws have moved
    the shape away from the training image, so only its low-pass layout, its colours and the discriminator
    still say what to draw. With --dec-nearest-render N, a step whose f_hat the VAR drew in part is taught not the
    training image but the render nearest to the decoder's drawing among it and N renders of it with the geometry
    jittered (scripts/nearest_render.py): a clean shape where the VAR's tokens put it."""
    state_path = os.path.join(args.state_dir, "decoder_state.pt")
    sampled_scales = list(args.dec_sampled_scales or [])
    # what makes a saved state this run's: (key, flag, this run's value, the value of a state saved without it)
    identity = [("sampled_scales", "--dec-sampled-scales", sampled_scales, []),
                ("colour_weight", "--colour-weight", args.colour_weight, 0.0),
                ("disc_weight", "--disc-weight", args.disc_weight, 0.0),
                ("disc_layers", "--disc-layers", args.disc_layers, 3),
                ("disc_classes", "--disc-classes", args.disc_classes, False),
                ("pixel_from", "--dec-pixel-from", args.dec_pixel_from, 0),
                ("flat_weight", "--flat-weight", args.flat_weight, 0.0),
                ("more_smooth", "--dec-more-smooth", getattr(args, "dec_more_smooth", False), False),
                ("disc_init", "--disc-init", getattr(args, "disc_init", ""), ""),
                ("nearest_render", "--dec-nearest-render", getattr(args, "dec_nearest_render", 0), 0)]
    var = load_var_for_decoder(args, vae, device) if sampled_scales else None
    vae.requires_grad_(False)
    params = list(vae.post_quant_conv.parameters()) + list(vae.decoder.parameters())
    for p_ in params:
        p_.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=args.dec_lr, betas=(0.9, 0.99))
    disc = disc_opt = None
    if args.disc_weight:
        torch.manual_seed(args.seed + 6)
        disc = PatchDiscriminator(layers=args.disc_layers, num_classes=NUM_CLASSES if args.disc_classes else 0)
        if getattr(args, "disc_init", ""):  # an earlier decoder run's discriminator, already judging
            disc.load_state_dict(load_state(args.disc_init)["disc"])
            log(f"decoder: discriminator from {args.disc_init}")
        disc = disc.to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=args.disc_lr, betas=(0.5, 0.9))
    gen = torch.Generator().manual_seed(args.seed + 5)
    start = 0
    st = load_state(state_path) if args.resume and os.path.exists(state_path) else None
    for key, flag, value, absent in identity:
        if st is not None and st.get(key, absent) != value:
            log(f"decoder: {state_path} was saved by a run with {flag} {st.get(key, absent)}, not {value}; "
                "starting afresh")
            st = None
    if st is not None:
        vae.load_state_dict({**vae.state_dict(), **st["decoder_side"]})  # the encoder side is the given one
        opt.load_state_dict(st["opt"])
        if disc is not None:
            disc.load_state_dict(st["disc"])
            disc_opt.load_state_dict(st["disc_opt"])
        gen.set_state(st["gen"])
        start = st["step"]
        log(f"decoder: resumed from {state_path} at step {start}")

    def checkpoint(done_steps: int) -> None:
        extra = {"disc": disc.state_dict(), "disc_opt": disc_opt.state_dict()} if disc is not None else {}
        save_state(state_path, decoder_side=decoder_side(vae), opt=opt.state_dict(), gen=gen.get_state(),
                   step=done_steps, **{key: value for key, _, value, _ in identity}, **extra)

    vae.eval()  # no dropout / batch statistics anywhere in the VQVAE; eval keeps the encoder frozen
    t0, done = time.time(), 0
    avg: Dict[str, float] = {}
    for step in range(start, args.dec_steps):
        lr_scale = cosine_lr(step, args.dec_steps, 1.0, warmup=min(100, args.dec_steps // 10 + 1))
        set_lr(opt, args.dec_lr * lr_scale)
        img, labels, shape_params = shapes_batch_with_params(args.dec_batch, gen, args.image_size)
        x, labels = img.to(device).mul(2).sub(1), labels.to(device)
        with torch.no_grad():
            tokens = vae.img_to_idx(x)
            k = len(tokens)  # scales of the image's own tokens in f_hat
            if sampled_scales:
                k = sampled_scales[int(torch.randint(len(sampled_scales), (1,), generator=gen))]
                f_hat = sampled_fine_scales_fhat(vae, var, tokens, labels, k, gen, args)
            else:
                f_hat = vae.quantize.idx_to_fhat(tokens)
        rec = vae.decoder(vae.post_quant_conv(f_hat))
        target, moved = x, None
        if getattr(args, "dec_nearest_render", 0) and k < len(tokens):
            target, moved = nearest_renders(rec.detach(), labels, shape_params, args.dec_nearest_render, gen)
        pixel_exact = 1.0 if k >= args.dec_pixel_from else 0.0
        losses = {"rec": (pixel_exact, F.l1_loss(rec, target) + F.mse_loss(rec, target)),
                  "edge": (pixel_exact * args.edge_weight, edge_loss(rec, target)),
                  "low-pass": (args.lowpass_weight, lowpass_loss(rec, target))}
        if args.colour_weight:
            losses["colour"] = (args.colour_weight, colour_loss(rec, target))
        if args.flat_weight:
            losses["flat"] = (args.flat_weight, flat_area_loss(rec))
        if moved is not None:  # logged only: the share of the batch whose target is a jittered render
            losses["moved"] = (0.0, moved.float().mean())
        total = sum(w * loss for w, loss in losses.values())
        if disc is not None:
            disc.requires_grad_(False)
            adversarial = generator_hinge_loss(disc(rec, labels))
            # the decoder is judged from --disc-start on, once the discriminator has learnt something to judge by
            weight = (args.disc_weight * adaptive_adversarial_weight(total, adversarial, vae.decoder.conv_out.weight)
                      if step >= args.disc_start else 0.0)
            losses["adversarial"] = (weight, adversarial)
            total = total + weight * adversarial
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if disc is not None:
            disc.requires_grad_(True)
            set_lr(disc_opt, args.disc_lr * lr_scale)
            d_loss = discriminator_hinge_loss(disc(x, labels), disc(rec.detach(), labels))
            disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            disc_opt.step()
            losses["discriminator"] = (1.0, d_loss)
        done += 1
        for name, (_, loss) in losses.items():
            avg[name] = loss.item() if name not in avg else 0.95 * avg[name] + 0.05 * loss.item()
        if args.save_every and (step + 1) % args.save_every == 0:
            checkpoint(step + 1)
        if step % args.log_every == 0 or step == args.dec_steps - 1:
            log(f"decoder step {step:5d}/{args.dec_steps} " + " ".join(f"{n} {v:.4f}" for n, v in avg.items())
                + f" ({(time.time() - t0) / done:.2f} s/step)")
    if args.save_every and start < args.dec_steps:
        checkpoint(args.dec_steps)
    vae.requires_grad_(True)
    return vae


# ---- stage 2: tokens -----------------------------------------------------------------------------
ENCODE_BATCH = 250


@torch.no_grad()
def encode_images(vae: VQVAE, img: torch.Tensor, device: torch.device) -> List[torch.Tensor]:
    return [idx.cpu() for idx in vae.img_to_idx(img.to(device).mul(2).sub(1))]


@torch.no_grad()
def encode_dataset(vae: VQVAE, args, device: torch.device, cached: Optional[dict] = None,
                   save=None) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """Tokens of ``args.var_images`` training images (batches of 250 from the seed + 2 generator).

    ``cached`` (tokens and labels of the first images of the same stream, the same encoder) is
    extended rather than recomputed: its batches are re-rendered only to advance the generator (about
    0.3 ms an image against 9 ms to encode). ``save(tokens, labels)`` is called every 20 batches, so an
    interrupted encoding resumes where it stopped."""
    gen = torch.Generator().manual_seed(args.seed + 2)
    S = len(args.patch_nums)
    batches = math.ceil(args.var_images / ENCODE_BATCH)
    have = 0 if cached is None else len(cached["labels"]) // ENCODE_BATCH
    tokens: List[List[torch.Tensor]] = [[] for _ in range(S)]
    labels: List[torch.Tensor] = []
    if have:
        for si in range(S):
            tokens[si].append(cached["tokens"][si][:have * ENCODE_BATCH])
        labels.append(cached["labels"][:have * ENCODE_BATCH])
        log(f"tokens: {have * ENCODE_BATCH} images from the cache, encoding {max(0, batches - have) * ENCODE_BATCH} more")
    err = None
    for b in range(batches):
        img, lab = shapes_batch(ENCODE_BATCH, gen, args.image_size)
        if b < have:
            continue
        idx_Bl = encode_images(vae, img, device)
        for si, idx in enumerate(idx_Bl):
            tokens[si].append(idx)
        labels.append(lab)
        if err is None:
            err = (vae.idx_to_img([i.to(device) for i in idx_Bl]) - img.to(device).mul(2).sub(1)).abs().mean().item()
        if save is not None and (b + 1) % 20 == 0 and b + 1 < batches:
            tokens = [[torch.cat(t)] for t in tokens]
            labels = [torch.cat(labels)]
            save(tokens=[t[0] for t in tokens], labels=labels[0])
            log(f"tokens: {(b + 1) * ENCODE_BATCH}/{batches * ENCODE_BATCH} images encoded")
    out_tokens, out_labels = [torch.cat(t) for t in tokens], torch.cat(labels)
    # the quantizer's usage statistics, as the reference keeps them (hits per scale per batch)
    hit_SV = torch.stack([torch.bincount(t.flatten(), minlength=args.vocab).float() for t in out_tokens])
    vae.quantize.ema_vocab_hit_SV.copy_(hit_SV / (len(out_labels) // ENCODE_BATCH))  # a larger cache: all of it
    log(f"encoded {batches * ENCODE_BATCH} images to tokens"
        + (f"; reconstruction L1 in [-1,1]: {err:.4f}" if err is not None else "")
        + f"; codes used per scale: {[(h > 0).sum().item() for h in hit_SV]}")
    return out_tokens, out_labels


@torch.no_grad()
def encode_heldout(vae: VQVAE, args, device: torch.device) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """Tokens of ``args.val_images`` images from another stream (seed + 6), never trained on: the
    VAR's held-out loss, which tells memorising the token set from learning the shapes."""
    gen = torch.Generator().manual_seed(args.seed + 6)
    img, lab = shapes_batch(args.val_images, gen, args.image_size)
    return encode_images(vae, img, device), lab


def encoder_fingerprint(vae: VQVAE) -> torch.Tensor:
    """Sums of the weights that decide the tokens (encoder, quant_conv, codebook, Phi): cached tokens
    are reused only when these are exactly the same."""
    mods = (vae.encoder, vae.quant_conv, vae.quantize)
    return torch.stack([torch.stack([p.detach().double().sum(), p.detach().double().abs().sum()])
                        for m in mods for p in m.parameters()]).cpu()


def cached_patch_nums(st: dict) -> List[int]:
    """The scales of a token cache (its per-scale token maps are (N, pn * pn))."""
    return [round(t.shape[1] ** 0.5) for t in st["tokens"]]


def teacher_forcing_input(quant: MultiScaleQuantizer, idx_Bl: List[torch.Tensor]) -> torch.Tensor:
    """(B, L - first_l, Cvae) VAR input: for every scale after the first, the accumulated f_hat of the
    previous scales, area-downsampled to this scale and flattened (the reference ``idxBl_to_var_input``)."""
    pns = quant.v_patch_nums
    B, C, S, HW = idx_Bl[0].shape[0], quant.Cvae, len(pns), pns[-1]
    f_hat = quant.embedding.weight.new_zeros(B, C, HW, HW)
    out = []
    for si in range(S - 1):
        h = quant.embedding(idx_Bl[si]).transpose(1, 2).reshape(B, C, pns[si], pns[si])
        f_hat = f_hat + quant.phi(si, S)(F.interpolate(h, size=(HW, HW), mode="bicubic"))
        nxt = pns[si + 1]
        out.append(F.interpolate(f_hat, size=(nxt, nxt), mode="area").reshape(B, C, -1).transpose(1, 2))
    return torch.cat(out, dim=1)


def self_correction_batch(quant: MultiScaleQuantizer, var: VAR, label: torch.Tensor, x: torch.Tensor,
                          target: torch.Tensor, p_max: float, gen: torch.Generator, return_fed: bool = False,
                          scales: Optional[Sequence[int]] = None):
    """Self-correction (Infinity's bitwise self-correction, for index tokens): the VAR input and targets of a
    batch in which every image's non-final scales have a share p ~ U(0, p_max) of their tokens replaced by
    the VAR's own samples (drawn from its teacher-forced logits, as sampling would draw them), and every
    later scale's target re-quantized from what is left of the image's f_hat after those tokens. Teacher
    forcing only ever shows the VAR coarse tokens that agree with each other; sampling does not, and the
    fine scales then have to draw from inputs they never saw. Images left uncorrupted keep their tokens.
    ``scales`` (patch sizes) limits the replacing to those scales (None: every non-final one); the targets
    of every later scale are still re-quantized. Returns (input, targets), and with ``return_fed`` the
    tokens fed per non-final scale too."""
    pns = quant.v_patch_nums
    B, S, C = label.shape[0], len(pns), quant.Cvae
    lens = [pn * pn for pn in pns]
    with torch.no_grad():
        logits = var(label, x).float()
        sampled = torch.multinomial(logits.softmax(-1).reshape(-1, logits.shape[-1]).cpu(), 1,
                                    generator=gen).view(B, -1).to(target.device).split(lens, dim=1)
        true = target.split(lens, dim=1)
        f_goal = quant.idx_to_fhat(list(true))
        f_hat = torch.zeros_like(f_goal)
        share = (torch.rand(B, 1, generator=gen) * p_max).to(target.device)
        corrupted = torch.zeros(B, dtype=torch.bool, device=target.device)
        inputs, targets = [], []
        for si, pn in enumerate(pns):
            if si == 0:
                tgt = true[0]
            else:
                rest = f_goal - f_hat
                z = F.interpolate(rest, size=(pn, pn), mode="area") if si < S - 1 else rest
                requant = quant.nearest_code(z.permute(0, 2, 3, 1).reshape(-1, C)).view(B, pn * pn)
                tgt = torch.where(corrupted[:, None], requant, true[si])
            targets.append(tgt)
            if si == S - 1:
                break
            flip = (torch.rand(B, pn * pn, generator=gen).to(target.device) < share)
            if scales is not None and pn not in scales:
                flip.zero_()  # drawn anyway: the generator's stream is the same whichever scales are on
            inp = torch.where(flip, sampled[si], tgt)
            corrupted |= (inp != tgt).any(dim=1)
            inputs.append(inp)
            h = quant.embedding(inp).transpose(1, 2).reshape(B, C, pn, pn)
            f_hat, _ = quant.next_autoregressive_input(si, f_hat, h)
        x_new, target_new = teacher_forcing_input(quant, inputs + [targets[-1]]), torch.cat(targets, dim=1)
    return (x_new, target_new, inputs) if return_fed else (x_new, target_new)


# ---- stage 3: VAR --------------------------------------------------------------------------------
def init_var(var: VAR, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02) -> None:
    """Initialisation in the spirit of the reference: small truncated normals, near-identity blocks."""
    std = (1 / var.C / 3) ** 0.5
    for m in var.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    for p in (var.pos_start, var.pos_1LC):
        nn.init.trunc_normal_(p, std=std)
    with torch.no_grad():
        var.head.weight.mul_(init_head)
        var.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        depth = len(var.blocks)
        for block in var.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * depth))
            block.ffn.fc2.weight.div_(math.sqrt(2 * depth))
            w = block.ada_lin[-1].weight
            w[2 * var.C:].mul_(init_adaln)
            w[:2 * var.C].mul_(init_adaln_gamma)


def checkpoint_depth(sd: Dict[str, torch.Tensor]) -> int:
    """How many transformer blocks a VAR state dict holds."""
    return 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("blocks.")), default=-1)


def deepened_state_dict(sd: Dict[str, torch.Tensor], var: VAR) -> Tuple[Dict[str, torch.Tensor], List[int]]:
    """A shallower VAR's weights for the deeper ``var`` (same width and scales), computing the same function.

    The old blocks keep their order, spread evenly over the new depth; a new block keeps ``var``'s own
    (fresh) weights except its AdaLN gates (gamma1, gamma2: the first 2C outputs of ``ada_lin``), which are
    zeroed, so it adds nothing to the residual stream until training moves the gates. Returns the state
    dict for ``var`` and the new index of every old block.
    """
    old_depth, depth = checkpoint_depth(sd), len(var.blocks)
    if not 0 < old_depth <= depth:
        raise ValueError(f"--var-deepen: the init checkpoint has {old_depth} blocks, the VAR {depth}")
    placed = [round(i * (depth - 1) / max(1, old_depth - 1)) for i in range(old_depth)] if old_depth > 1 else [0]
    out, C = dict(var.state_dict()), var.C
    out.update({k: v for k, v in sd.items() if not k.startswith("blocks.")})
    for b in range(depth):
        prefix = f"blocks.{b}."
        if b in placed:
            src = f"blocks.{placed.index(b)}."
            out.update({prefix + k[len(src):]: v for k, v in sd.items() if k.startswith(src)})
        else:
            for name in ("ada_lin.1.weight", "ada_lin.1.bias"):
                gate = out[prefix + name].clone()
                gate[:2 * C] = 0
                out[prefix + name] = gate
    return out, placed


def checkpoint_patch_nums(sd: Dict[str, torch.Tensor], path: str) -> Tuple[int, ...]:
    """The scale schedule a VAR state dict was trained with (read off its weights)."""
    from var_fast.checkpoint import detect_patch_nums
    return detect_patch_nums(sd, path)


def rescaled_state_dict(sd: Dict[str, torch.Tensor], old_patch_nums: Sequence[int],
                        var: VAR) -> Tuple[Dict[str, torch.Tensor], Dict[int, str]]:
    """A VAR's weights trained with ``old_patch_nums`` for ``var`` with another scale schedule (same depth,
    width and vocabulary; the first scale the same size).

    Only two weights depend on the schedule: the per-token position embeddings ``pos_1LC`` and the per-scale
    ``lvl_embed``. A scale the old schedule has keeps both; a new scale gets the position grid of the nearest
    old scale at least as large, bilinearly resized to its size, and the level embedding interpolated
    linearly (in side length) between its two old neighbours. The blocks, embeddings and head are copied; the
    masks (``lvl_1L``, ``attn_bias_for_masking``) are ``var``'s own. Returns the state dict and, for every new
    scale index, where its weights came from.
    """
    old, new = tuple(int(p) for p in old_patch_nums), tuple(var.patch_nums)
    if old[0] != new[0]:
        raise ValueError(f"--var-rescale: the first scale must stay {old[0]}x{old[0]}, got {new[0]}x{new[0]}")
    if list(new) != sorted(set(new)) or new[-1] != old[-1]:
        raise ValueError(f"--var-rescale: {new} must be increasing and end at the old last scale {old[-1]}")
    C = sd["pos_1LC"].shape[-1]
    old_pos, old_lvl = sd["pos_1LC"][0], sd["lvl_embed.weight"]
    starts = [sum(p * p for p in old[:i]) for i in range(len(old))]

    def old_grid(i: int) -> torch.Tensor:  # (1, C, pn, pn) position grid of old scale i
        pn = old[i]
        return old_pos[starts[i]:starts[i] + pn * pn].T.reshape(1, C, pn, pn)

    pos, lvl, origin = [], [], {}
    for j, pn in enumerate(new):
        if pn in old:
            i = old.index(pn)
            pos.append(old_grid(i).reshape(C, pn * pn).T)
            lvl.append(old_lvl[i])
            origin[j] = f"old scale {i} ({pn}x{pn})"
            continue
        hi = next(i for i, q in enumerate(old) if q > pn)
        lo = hi - 1
        grid = F.interpolate(old_grid(hi).float(), size=(pn, pn), mode="bilinear", align_corners=False)
        pos.append(grid.to(old_pos.dtype).reshape(C, pn * pn).T)
        t = (pn - old[lo]) / (old[hi] - old[lo])
        lvl.append((1 - t) * old_lvl[lo] + t * old_lvl[hi])
        origin[j] = (f"new: positions of old scale {hi} ({old[hi]}x{old[hi]}) resized, level embedding "
                     f"{1 - t:.2f} x old {lo} + {t:.2f} x old {hi}")
    out = dict(var.state_dict())
    out.update({k: v for k, v in sd.items() if k not in ("pos_1LC", "lvl_embed.weight", "lvl_1L",
                                                            "attn_bias_for_masking")})
    out["pos_1LC"] = torch.cat(pos).unsqueeze(0).contiguous()
    out["lvl_embed.weight"] = torch.stack(lvl).contiguous()
    return out, origin


@torch.no_grad()
def heldout_token_losses(var: VAR, x: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, L) teacher-forced cross-entropy of every held-out token (the labels kept, eval mode)."""
    was_training = var.training
    var.eval()
    losses = []
    for i in range(0, len(labels), 250):
        logits = var(labels[i:i + 250], x[i:i + 250])
        losses.append(F.cross_entropy(logits.transpose(1, 2), target[i:i + 250], reduction="none"))
    var.train(was_training)
    return torch.cat(losses)


def scale_means(loss: torch.Tensor, patch_nums) -> List[float]:
    """The mean of (N, L) token losses over each scale's tokens."""
    means, start = [], 0
    for pn in patch_nums:
        means.append(loss[:, start:start + pn * pn].mean().item())
        start += pn * pn
    return means


def heldout_loss(var: VAR, x: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, patch_nums) -> str:
    """Teacher-forced cross-entropy on held-out tokens, overall and per scale (the labels kept)."""
    loss = heldout_token_losses(var, x, target, labels)
    per_scale = " ".join(f"{v:.3f}" for v in scale_means(loss, patch_nums))
    return f"{loss.mean().item():.4f} (per scale {per_scale})"


def train_var(vae: VQVAE, tokens: List[torch.Tensor], labels: torch.Tensor, args, device: torch.device,
              heldout: Optional[Tuple[List[torch.Tensor], torch.Tensor]] = None) -> VAR:
    torch.manual_seed(args.seed + 3)
    cfg = VARConfig(depth=args.var_depth, embed_dim=args.var_width, num_heads=max(1, args.var_width // 64),
                    mlp_hidden=4 * args.var_width, num_classes=NUM_CLASSES, shared_aln=False, attn_l2_norm=True,
                    patch_nums=args.patch_nums, Cvae=args.cvae, vocab_size=args.vocab)
    var = VAR(cfg).to(device)
    init_var(var)
    if args.var_init:  # fine-tune: the VAR's layout must be the one the args describe
        from var_fast.checkpoint import load_strict, read_state_dict
        sd = read_state_dict(args.var_init, "VAR")
        if getattr(args, "var_deepen", False):
            sd, placed = deepened_state_dict(sd, var)
            log(f"VAR: {len(placed)} blocks of {args.var_init} placed at {placed} of {len(var.blocks)}; "
                f"the others start as the identity")
        if getattr(args, "var_rescale", False):
            old_pns = checkpoint_patch_nums(sd, args.var_init)
            sd, origin = rescaled_state_dict(sd, old_pns, var)
            log(f"VAR: {args.var_init}'s scales {old_pns} -> {tuple(var.patch_nums)}; "
                + "; ".join(f"scale {j}: {o}" for j, o in origin.items()))
        load_strict(var, sd, args.var_init, "VAR")
        log(f"VAR: starting from {args.var_init}")
    var.train()
    log(f"VAR: {sum(p.numel() for p in var.parameters()) / 1e6:.2f} M parameters, {cfg}")
    quant = vae.quantize.requires_grad_(False)
    with torch.no_grad():  # the VAE is frozen: compute every teacher-forcing input once
        x_all = torch.cat([teacher_forcing_input(quant, [t[i:i + 1000].to(device) for t in tokens])
                           for i in range(0, len(labels), 1000)])
    target_all = torch.cat(tokens, dim=1)  # (N, L)
    if heldout is not None:
        with torch.no_grad():
            x_val = teacher_forcing_input(quant, [t.to(device) for t in heldout[0]])
        target_val, label_val = torch.cat(heldout[0], dim=1).to(device), heldout[1].to(device)
    decay, no_decay = [], []
    for name, p in var.named_parameters():
        (no_decay if p.ndim < 2 or "emb" in name or "pos_" in name or "scale_mul" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.var_lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed + 4)
    N = len(labels)
    state_path = os.path.join(args.state_dir, "var_state.pt")
    start, loss_avg = 0, None
    st = load_state(state_path) if args.resume and os.path.exists(state_path) else None
    run = var_run_identity(args)
    if st is not None and st.get("var_init", "") != args.var_init:
        # the saved VAR run started from other weights (e.g. the base run before a --var-init
        # fine-tune in the same --state-dir, whose token cache it extends): start this one afresh
        log(f"VAR: {state_path} is another run's (from {st.get('var_init', '') or 'scratch'}); starting this one")
        st = None
    elif st is not None and saved_run_identity(st) != run:
        # same starting weights, another run (another depth, width, loss or --var-deepen)
        saved = saved_run_identity(st)
        differs = {k: (saved.get(k), v) for k, v in run.items() if saved.get(k) != v}
        log(f"VAR: {state_path} is another run's from the same weights ({differs}: saved, this run); "
            f"starting this one")
        st = None
    # weight averaging (--var-average-from): the float64 sum of the weights after every
    # --var-average-every-th step from that step on; the output is their mean
    average_from, average_every = getattr(args, "var_average_from", 0), getattr(args, "var_average_every", 100)
    average_sum, average_steps = None, []
    if st is not None:
        var.load_state_dict(st["var"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        start, loss_avg = st["step"], st["loss_avg"]
        average_sum, average_steps = st.get("average_sum"), list(st.get("average_steps", []))
        log(f"VAR: resumed from {state_path} at step {start}")
    if heldout is not None and start == 0 and args.var_init:  # where the fine-tuning starts from
        log(f"var step     0: held-out loss {heldout_loss(var, x_val, target_val, label_val, args.patch_nums)}")
    token_weights = loss_token_weights(args.patch_nums, getattr(args, "var_scale_weighting", "tokens"))
    token_weights = None if token_weights is None else token_weights.to(device)
    image_weights = class_sampling_weights(labels, getattr(args, "var_class_weights", None))
    self_correction = getattr(args, "var_self_correction", 0.0)
    self_correction_scales = getattr(args, "var_self_correction_scales", None)
    t0, done = time.time(), 0
    for step in range(start, args.var_steps):
        set_lr(opt, cosine_lr(step, args.var_steps, args.var_lr, warmup=min(200, args.var_steps // 10 + 1)))
        if image_weights is None:  # every image alike (the reference's uniform sampling)
            pick = torch.randint(N, (args.var_batch,), generator=gen)
        else:
            pick = torch.multinomial(image_weights, args.var_batch, replacement=True, generator=gen)
        label = labels[pick].to(device)
        drop = torch.rand(args.var_batch, generator=gen).to(device) < args.label_dropout
        label = torch.where(drop, torch.full_like(label, NUM_CLASSES), label)
        x, target = x_all[pick].to(device), target_all[pick].to(device)
        if self_correction:
            x, target = self_correction_batch(quant, var, label, x, target, self_correction, gen,
                                              scales=self_correction_scales)
        logits = var(label, x)
        loss = token_loss(logits, target, token_weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        opt.step()
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        done += 1
        if average_from and step + 1 >= average_from and (step + 1) % average_every == 0:
            average_sum = add_weights(average_sum, var)
            average_steps.append(step + 1)
        if args.save_every and step % args.save_every == args.save_every - 1:  # to resume and to evaluate
            save_state(state_path, var=var.state_dict(), opt=opt.state_dict(), gen=gen.get_state(), step=step + 1,
                       loss_avg=loss_avg, var_init=args.var_init, run=run, average_sum=average_sum,
                       average_steps=average_steps)
            save_reference_format(var, os.path.join(args.out_dir, VAR_FILE))
        if step % args.log_every == 0 or step == args.var_steps - 1:
            log(f"var step {step:5d}/{args.var_steps} loss {loss_avg:.4f} "
                f"({(time.time() - t0) / done:.3f} s/step)")
        if heldout is not None and ((step + 1) % args.val_every == 0 or step == args.var_steps - 1):
            log(f"var step {step + 1:5d}: held-out loss {heldout_loss(var, x_val, target_val, label_val, args.patch_nums)}")
    if average_steps:
        save_reference_format(var, os.path.join(args.out_dir, VAR_LAST_FILE))
        mean = {k: v if k not in average_sum else (average_sum[k] / len(average_steps)).to(v.dtype)
                for k, v in var.state_dict().items()}  # integer buffers (constants) as they are
        var.load_state_dict(mean)
        held = f": held-out loss {heldout_loss(var, x_val, target_val, label_val, args.patch_nums)}" if heldout else ""
        steps = (f"step {average_steps[0]}" if len(average_steps) == 1 else
                 f"steps {average_steps[0]}, {average_steps[0] + average_every}, ..., {average_steps[-1]}")
        log(f"VAR: the mean of the weights after {steps} ({len(average_steps)} sets; the last weights in "
            f"{VAR_LAST_FILE}){held}")
    var.eval()
    return var


def class_weights_problem(class_weights: List[float]) -> str:
    """What is wrong with per-class sampling weights ("" when nothing is)."""
    if len(class_weights) != NUM_CLASSES or not all(math.isfinite(w) and w >= 0 for w in class_weights) \
            or sum(class_weights) <= 0:
        return f"class weights must be {NUM_CLASSES} finite numbers >= 0, not all zero; got {list(class_weights)}"
    return ""


def class_sampling_weights(labels: torch.Tensor, class_weights: Optional[List[float]]) -> Optional[torch.Tensor]:
    """(N,) probability weight of every training image for the VAR's batches: its class's weight
    (--var-class-weights, one per class), or None for uniform sampling. Training draws the images of a
    class with weight 2 twice as often; the model stays class-conditional, so this moves training steps
    to the classes whose tokens are hardest, not the classes a sample shows."""
    if class_weights is None:
        return None
    problem = class_weights_problem(class_weights)
    if problem:
        raise ValueError(problem)
    image_weights = torch.as_tensor(class_weights, dtype=torch.float64)[labels.long()]
    if image_weights.sum() <= 0:
        raise ValueError("class weights give every training image weight 0: no image to train on")
    return image_weights


def var_run_identity(args) -> dict:
    """What makes a saved VAR state this run's, besides --var-init (--var-steps and --var-lr may change on
    a resume: the retrain's schedule did)."""
    class_weights = getattr(args, "var_class_weights", None)
    sc_scales = getattr(args, "var_self_correction_scales", None)
    return {"var_depth": args.var_depth, "var_width": args.var_width, "var_deepen": getattr(args, "var_deepen", False),
            "var_rescale": getattr(args, "var_rescale", False), "patch_nums": [int(p) for p in args.patch_nums],
            "var_scale_weighting": getattr(args, "var_scale_weighting", "tokens"),
            "var_class_weights": None if class_weights is None else [float(w) for w in class_weights],
            "var_self_correction": float(getattr(args, "var_self_correction", 0.0)),
            "var_self_correction_scales": None if sc_scales is None else sorted(int(pn) for pn in sc_scales)}


# what a state saved before an entry of the run identity existed had: that entry's default
IDENTITY_DEFAULTS = {"var_deepen": False, "var_scale_weighting": "tokens", "var_class_weights": None,
                     "var_self_correction": 0.0, "var_self_correction_scales": None, "var_rescale": False,
                     "patch_nums": [1, 2, 3, 4, 6, 8]}


def saved_run_identity(st: dict) -> dict:
    """The identity a saved state was written with; states from before it was saved: read off the weights."""
    if "run" in st:
        return {**IDENTITY_DEFAULTS, **st["run"]}
    var = st["var"]
    return {**IDENTITY_DEFAULTS, "var_depth": checkpoint_depth(var), "var_width": var["pos_start"].shape[-1],
            "var_scale_weighting": st.get("var_scale_weighting", "tokens")}


def loss_token_weights(patch_nums, weighting: str) -> Optional[torch.Tensor]:
    """(L,) weight of every token in the VAR loss, summing to 1, or None for "tokens", the reference's
    plain mean over all tokens (a scale counts by its pn*pn tokens: the 8x8 scale is half of the loss);
    "scales" gives every scale the same share (the coarse scales, which place the shape, count as much
    as the fine ones)."""
    if weighting == "tokens":
        return None
    if weighting == "scales":
        return torch.cat([torch.full((pn * pn,), 1.0 / (len(patch_nums) * pn * pn)) for pn in patch_nums])
    raise ValueError(f"scale weighting must be 'tokens' or 'scales', got {weighting!r}")


def token_loss(logits: torch.Tensor, target: torch.Tensor, token_weights: Optional[torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of (B, L, V) logits against (B, L) tokens: the plain mean (token_weights None), or
    weighted per token position and averaged over B."""
    if token_weights is None:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, L)
    return (ce * token_weights).sum(dim=1).mean()


def add_weights(total: Optional[Dict[str, torch.Tensor]], module: nn.Module) -> Dict[str, torch.Tensor]:
    """``total`` + the module's floating-point weights, summed in float64 (so that the mean of many sets
    does not depend on rounding in a running average); the first call starts the sum."""
    weights = {k: v.detach().cpu().double() for k, v in module.state_dict().items() if v.is_floating_point()}
    return weights if total is None else {k: total[k] + v for k, v in weights.items()}


def save_reference_format(module: nn.Module, path: str) -> None:
    """What the reference does: the plain state dict (tensors only, contiguous, on the CPU)."""
    torch.save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default=os.path.join(ROOT, "var_fast", "assets"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patch-nums", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--cvae", type=int, default=32)
    p.add_argument("--vae-ch", type=int, default=64)
    p.add_argument("--vae-ch-mult", type=int, nargs="+", default=[1, 1, 1, 1])
    p.add_argument("--vae-res-blocks", type=int, default=1)
    p.add_argument("--vae-ae-steps", type=int, default=3000, help="phase A: plain autoencoder steps")
    p.add_argument("--vae-ae-batch", type=int, default=8)
    p.add_argument("--vae-steps", type=int, default=1500, help="phase B: VQVAE steps")
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-checkpoint", default="", help="skip stage 1: use this trained VQVAE")
    p.add_argument("--vae-loss", choices=("edge-lowpass", "l1l2"), default="edge-lowpass",
                   help="VQVAE reconstruction objective: L1 + L2 plus the edge and low-pass terms (weights "
                        "--edge-weight, --lowpass-weight), or L1 + L2 alone (the first bundled model's)")
    p.add_argument("--dec-steps", type=int, default=0,
                   help="stage 1b: decoder-only fine-tuning steps of the (trained or loaded) VQVAE; tokens unchanged")
    p.add_argument("--dec-sampled-scales", type=int, nargs="+", default=None, metavar="K",
                   help="stage 1b: each step keeps the first K scales (one K of these, drawn per step) of the batch's "
                        "own tokens and lets the --var-init VAR sample the rest; the decoder learns to draw the "
                        "training image from that (K = the number of scales: the image's own tokens)")
    p.add_argument("--dec-batch", type=int, default=8)
    p.add_argument("--dec-lr", type=float, default=3e-4)
    p.add_argument("--edge-weight", type=float, default=1.0,
                   help="weight of the edge (finite-difference L1) loss, in the VQVAE and the decoder stage")
    p.add_argument("--lowpass-weight", type=float, default=2.0,
                   help="weight of the L1 loss between 8x8-average-pooled images (flat colours, gradients)")
    p.add_argument("--colour-weight", type=float, default=0.0,
                   help="decoder stage: weight of the L1 loss between the foreground's and the background's mean "
                        "colours of the reconstruction and the training image (0: off)")
    p.add_argument("--dec-more-smooth", action="store_true",
                   help="decoder stage: the VAR's draws (--dec-sampled-scales) enter f_hat as upstream's more_smooth "
                        "sampling mixes them (Gumbel-softmax weighted code embeddings), for a decoder that draws "
                        "more_smooth samples")
    p.add_argument("--dec-nearest-render", type=int, default=0, metavar="N",
                   help="decoder stage: where the VAR drew some of f_hat's scales, teach the render nearest to the "
                        "drawing among the training image and N renders of it with the geometry jittered "
                        "(scripts/nearest_render.py), not the training image itself (0: off)")
    p.add_argument("--flat-weight", type=float, default=0.0,
                   help="decoder stage: weight of a loss on texture inside the drawing's flat areas (flat_area_loss)")
    p.add_argument("--disc-weight", type=float, default=0.0,
                   help="decoder stage: weight of the adversarial loss of a patch discriminator, relative to the "
                        "pixel losses' pull (VQGAN's adaptive weight; 0: off; scripts/patch_discriminator.py)")
    p.add_argument("--disc-start", type=int, default=200, metavar="STEP",
                   help="decoder stage: the step from which the adversarial loss counts (the discriminator trains "
                        "from the first)")
    p.add_argument("--disc-lr", type=float, default=2e-4, help="decoder stage: the discriminator's learning rate")
    p.add_argument("--disc-layers", type=int, default=3,
                   help="decoder stage: the discriminator's stride-2 layers (3: 38 px patches of a 64 px image; "
                        "4: 78 px)")
    p.add_argument("--disc-classes", action="store_true",
                   help="decoder stage: a class-conditional (projection) discriminator, which judges a drawing as "
                        "a render of its class")
    p.add_argument("--disc-init", default="", metavar="STATE",
                   help="decoder stage: start the discriminator from this earlier decoder run's state file "
                        "(its --state-dir's decoder_state.pt; same --disc-layers and --disc-classes)")
    p.add_argument("--dec-pixel-from", type=int, default=0, metavar="K0",
                   help="decoder stage with --dec-sampled-scales: steps that keep fewer than K0 of the image's own "
                        "scales drop the pixel-exact losses (L1 + L2, edge), keeping the low-pass, colour and "
                        "adversarial ones (0: never)")
    p.add_argument("--var-init", default="", help="start the VAR from these weights (fine-tuning) instead of scratch")
    p.add_argument("--var-deepen", action="store_true",
                   help="--var-init may have fewer blocks than --var-depth: its blocks are spread evenly and the "
                        "new ones start as the identity (zero AdaLN gates), so training starts from the same function")
    p.add_argument("--var-rescale", action="store_true",
                   help="--var-init was trained with other --patch-nums (same first and last scale): its position "
                        "and level embeddings are carried over to the new scales (resized, interpolated)")
    p.add_argument("--var-images", type=int, default=20000, help="images encoded to tokens for the VAR")
    p.add_argument("--val-images", type=int, default=1000,
                   help="held-out images (another stream) whose per-scale VAR loss is logged every --val-every steps")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--var-depth", type=int, default=6)
    p.add_argument("--var-width", type=int, default=160)
    p.add_argument("--var-steps", type=int, default=8000)
    p.add_argument("--var-batch", type=int, default=64)
    p.add_argument("--var-lr", type=float, default=2e-3)
    p.add_argument("--var-average-from", type=int, default=0, metavar="STEP",
                   help="write the mean of the VAR weights after every --var-average-every-th step from STEP on "
                        "(stochastic weight averaging; 0: the last weights)")
    p.add_argument("--var-average-every", type=int, default=100, metavar="N")
    p.add_argument("--var-scale-weighting", choices=("tokens", "scales"), default="tokens",
                   help="VAR loss: the mean over all tokens (the reference's) or every scale the same share")
    p.add_argument("--var-class-weights", type=float, nargs=NUM_CLASSES, default=None, metavar="W",
                   help=f"draw the VAR's training images of each class ({', '.join(CLASS_NAMES)}) with these "
                        "relative weights (default: every image alike)")
    p.add_argument("--var-self-correction", type=float, default=0.0, metavar="P_MAX",
                   help="self-correction training: every image's coarse scales get a share U(0, P_MAX) of their tokens "
                        "replaced by the VAR's own samples and the later scales' targets re-quantized (0: off, plain "
                        "teacher forcing)")
    p.add_argument("--var-self-correction-scales", type=int, nargs="+", default=None, metavar="PN",
                   help="replace tokens only at these scales (patch sizes, each a non-final one of --patch-nums; "
                        "default: every non-final scale); needs --var-self-correction")
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--cfg", type=float, default=3.0, help="recommended guidance, written to the json")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=0.8, help="recommended top-p, written to the json (chosen by scripts/eval_default_model.py)")
    p.add_argument("--per-class", type=int, default=8, help="images per class `var-fast sample` draws by default")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=0,
                   help="save the resumable training state (and the VAR) every N steps (0: only at the end)")
    p.add_argument("--state-dir", default=os.path.join(ROOT, "build", "train_default_model"),
                   help="where the resumable training state lives")
    p.add_argument("--resume", action="store_true", help="continue the stages from their saved state in --state-dir")
    p.add_argument("--log-file", default="", help="also append the log to this file")
    p.add_argument("--stop-after-vae", action="store_true", help="save the VQVAE and stop (no tokens, no VAR)")
    p.add_argument("--quick", action="store_true", help="tiny run to check the pipeline (about a minute)")
    args = p.parse_args(argv)
    if args.quick:
        args.vae_ae_steps, args.vae_steps, args.var_images, args.var_steps, args.log_every = 10, 10, 500, 20, 5
        args.val_images, args.val_every = 100, 10
    if not 0 <= args.var_average_from <= args.var_steps:
        p.error(f"--var-average-from must be a step in 0..--var-steps ({args.var_steps}), got {args.var_average_from}")
    if args.var_average_every < 1:
        p.error(f"--var-average-every must be >= 1, got {args.var_average_every}")
    if args.var_average_from and -(-args.var_average_from // args.var_average_every) * args.var_average_every > args.var_steps:
        p.error(f"no step from --var-average-from {args.var_average_from} to --var-steps {args.var_steps} is a "
                f"multiple of --var-average-every {args.var_average_every}: nothing to average")
    if not 0.0 <= args.var_self_correction <= 1.0:
        p.error(f"--var-self-correction must be a share in [0, 1], got {args.var_self_correction}")
    if args.var_self_correction_scales is not None:
        if not args.var_self_correction:
            p.error("--var-self-correction-scales needs --var-self-correction P_MAX > 0")
        wrong = [pn for pn in args.var_self_correction_scales if pn not in args.patch_nums[:-1]]
        if wrong:
            p.error(f"--var-self-correction-scales: {wrong} not a non-final scale of --patch-nums "
                    f"{' '.join(map(str, args.patch_nums))}")
    if args.var_class_weights is not None and class_weights_problem(args.var_class_weights):
        p.error(f"--var-class-weights: {class_weights_problem(args.var_class_weights)}")
    if args.var_deepen:
        if not args.var_init:
            p.error("--var-deepen deepens the --var-init checkpoint: give --var-init")
        from var_fast.checkpoint import read_state_dict
        init_depth = checkpoint_depth(read_state_dict(args.var_init, "VAR"))
        if not 0 < init_depth <= args.var_depth:
            p.error(f"--var-deepen: --var-init {args.var_init!r} has {init_depth} blocks, more than --var-depth "
                    f"{args.var_depth}" if init_depth else f"--var-deepen: --var-init {args.var_init!r} has no blocks")
    if args.var_rescale:
        if not args.var_init:
            p.error("--var-rescale changes the scales of the --var-init checkpoint: give --var-init")
        from var_fast.checkpoint import CheckpointError, read_state_dict
        try:
            init_pns = checkpoint_patch_nums(read_state_dict(args.var_init, "VAR"), args.var_init)
        except CheckpointError as err:
            p.error(f"--var-rescale: {err}")
        pns = list(args.patch_nums)
        if init_pns[0] != pns[0] or init_pns[-1] != pns[-1] or pns != sorted(set(pns)):
            p.error(f"--var-rescale: --patch-nums {pns} must increase and start and end as --var-init's "
                    f"{list(init_pns)} do")
    if args.dec_sampled_scales is not None:
        bad = [k for k in args.dec_sampled_scales if not 0 <= k <= len(args.patch_nums)]
        if bad:
            p.error(f"--dec-sampled-scales: {bad} not in 0..{len(args.patch_nums)} (the number of scales)")
        if not args.var_init:
            p.error("--dec-sampled-scales decodes the samples of a VAR: give --var-init")
        if not args.dec_steps:
            p.error("--dec-sampled-scales belongs to the decoder stage: give --dec-steps")
    if args.colour_weight < 0:
        p.error(f"--colour-weight must be >= 0, got {args.colour_weight}")
    if args.colour_weight and not args.dec_steps:
        p.error("--colour-weight belongs to the decoder stage: give --dec-steps")
    if args.dec_more_smooth and not args.dec_sampled_scales:
        p.error("--dec-more-smooth changes how the VAR's draws enter f_hat: give --dec-sampled-scales")
    if args.dec_nearest_render < 0:
        p.error(f"--dec-nearest-render must be >= 0 (jittered renders per image), got {args.dec_nearest_render}")
    if args.dec_nearest_render and not args.dec_sampled_scales:
        p.error("--dec-nearest-render picks targets for f_hat the VAR drew in part: give --dec-sampled-scales")
    if args.flat_weight < 0:
        p.error(f"--flat-weight must be >= 0, got {args.flat_weight}")
    if args.flat_weight and not args.dec_steps:
        p.error("--flat-weight belongs to the decoder stage: give --dec-steps")
    if args.disc_weight < 0:
        p.error(f"--disc-weight must be >= 0, got {args.disc_weight}")
    if args.disc_weight and not args.dec_steps:
        p.error("--disc-weight belongs to the decoder stage: give --dec-steps")
    if args.disc_start < 0 or args.disc_lr <= 0:
        p.error(f"--disc-start must be >= 0 and --disc-lr > 0, got {args.disc_start} and {args.disc_lr}")
    if args.disc_layers < 1 or 2 ** args.disc_layers > args.image_size:
        p.error(f"--disc-layers must be in 1..log2(--image-size {args.image_size}), got {args.disc_layers}")
    if (args.disc_layers != 3 or args.disc_classes) and not args.disc_weight:
        p.error("--disc-layers and --disc-classes shape the discriminator of --disc-weight: give --disc-weight")
    if args.disc_init:
        if not args.disc_weight:
            p.error("--disc-init starts the discriminator of --disc-weight: give --disc-weight")
        problem = discriminator_state_problem(args.disc_init, args.disc_layers, args.disc_classes)
        if problem:
            p.error(f"--disc-init {args.disc_init!r}: {problem}")
    if not 0 <= args.dec_pixel_from <= len(args.patch_nums):
        p.error(f"--dec-pixel-from must be in 0..{len(args.patch_nums)} (the number of scales), got {args.dec_pixel_from}")
    if args.dec_pixel_from and args.dec_sampled_scales is None:
        p.error("--dec-pixel-from drops pixel losses for steps with sampled scales: give --dec-sampled-scales")
    args.patch_nums = tuple(args.patch_nums)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    os.makedirs(args.out_dir, exist_ok=True)
    os.makedirs(args.state_dir, exist_ok=True)
    if args.log_file:
        LOG_FILES.append(args.log_file)
    log("command: python scripts/train_default_model.py " + " ".join(argv if argv is not None else sys.argv[1:]))

    t_start = time.time()
    vae_path = os.path.join(args.out_dir, VAE_FILE)
    if args.vae_checkpoint:  # reuse a trained VQVAE (e.g. to try VAR settings); its layout must fit the args
        from var_fast.checkpoint import read_state_dict, vae_config_from_state_dict
        sd = read_state_dict(args.vae_checkpoint, "VQVAE")
        vae = VQVAE(vae_config_from_state_dict(sd, args.vae_checkpoint, patch_nums=args.patch_nums)).to(device)
        vae.load_state_dict(sd)
        vae.eval()
        log(f"loaded the VQVAE {args.vae_checkpoint}")
    else:
        vae = train_vae(args, device)
        save_reference_format(vae, vae_path)  # usage statistics are filled in after encoding
    if args.dec_steps:
        vae = finetune_decoder(vae, args, device)
        save_reference_format(vae, vae_path)
    t_vae = time.time()
    if args.stop_after_vae:
        log(f"saved {vae_path} ({t_vae - t_start:.0f} s); stopping after the VQVAE as asked")
        return
    tok_path = os.path.join(args.state_dir, "tokens.pt")
    fingerprint = encoder_fingerprint(vae)
    st = load_state(tok_path) if args.resume and os.path.exists(tok_path) else None
    if st is not None and not ("encoder" in st and torch.equal(st["encoder"], fingerprint)):
        log(f"tokens: {tok_path} was made by another encoder / codebook; encoding afresh")
        st = None
    elif st is not None and cached_patch_nums(st) != list(args.patch_nums):
        log(f"tokens: {tok_path} holds the scales {cached_patch_nums(st)}, not {list(args.patch_nums)}; encoding afresh")
        st = None
    if st is not None and len(st["labels"]) >= args.var_images and "hits" in st:
        tokens, labels = st["tokens"], st["labels"]
        vae.quantize.ema_vocab_hit_SV.copy_(st["hits"])
        log(f"tokens: resumed from {tok_path} ({len(labels)} images)")
    else:  # no cache, a partial one (extended), or one made by another encoder / codebook
        def save_partial(**part) -> None:
            save_state(tok_path, encoder=fingerprint, **part)
        tokens, labels = encode_dataset(vae, args, device, cached=st, save=save_partial)
        save_state(tok_path, tokens=tokens, labels=labels, hits=vae.quantize.ema_vocab_hit_SV.cpu(),
                   encoder=fingerprint)
    heldout = None
    if args.val_images:
        val_path = os.path.join(args.state_dir, "heldout_tokens.pt")
        sv = load_state(val_path) if args.resume and os.path.exists(val_path) else None
        if (sv is not None and torch.equal(sv["encoder"], fingerprint) and len(sv["labels"]) == args.val_images
                and cached_patch_nums(sv) == list(args.patch_nums)):
            heldout = sv["tokens"], sv["labels"]
        else:
            heldout = encode_heldout(vae, args, device)
            save_state(val_path, tokens=heldout[0], labels=heldout[1], encoder=fingerprint)
    t_tok = time.time()
    save_reference_format(vae, vae_path)
    var = train_var(vae, tokens, labels, args, device, heldout)
    t_var = time.time()

    save_reference_format(vae, vae_path)
    save_reference_format(var, os.path.join(args.out_dir, VAR_FILE))
    info = {
        "name": "var_fast default model (procedural shapes)",
        "class_names": list(CLASS_NAMES),
        "image_size": args.image_size,
        "patch_nums": list(args.patch_nums),
        "var_checkpoint": VAR_FILE,
        "vae_checkpoint": VAE_FILE,
        "sampling": {"cfg": args.cfg, "top_k": args.top_k, "top_p": args.top_p, "more_smooth": False,
                     "per_class": args.per_class},
        "training": {
            "command": "python scripts/train_default_model.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
            "seed": args.seed, "vae_ae_steps": args.vae_ae_steps, "vae_steps": args.vae_steps, "vae_batch": args.vae_batch,
            "var_images": args.var_images, "var_steps": args.var_steps, "var_batch": args.var_batch,
            "var_average_from": args.var_average_from, "var_average_every": args.var_average_every,
            "var_scale_weighting": args.var_scale_weighting, "var_class_weights": args.var_class_weights,
            "var_self_correction": args.var_self_correction,
            "var_self_correction_scales": args.var_self_correction_scales,
            "seconds": {"vae": round(t_vae - t_start), "tokens": round(t_tok - t_vae), "var": round(t_var - t_tok)},
            "torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
        },
    }
    with open(os.path.join(args.out_dir, INFO_FILE), "w") as fh:
        json.dump(info, fh, indent=2)
        fh.write("\n")
    log(f"saved {VAE_FILE}, {VAR_FILE}, {INFO_FILE} in {args.out_dir}; total {time.time() - t_start:.0f} s "
        f"(vae {t_vae - t_start:.0f} s, tokens {t_tok - t_vae:.0f} s, var {t_var - t_tok:.0f} s)")


if __name__ == "__main__":
    main()
