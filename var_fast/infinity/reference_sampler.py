"""Reference sampler of Infinity: upstream's ``Infinity.autoregressive_infer_cfg`` (infinity/models/infinity.py at
4c27bbb, as tools/run_infinity.py calls it: inference_mode=True, bit labels, vae_type != 0), operation for
operation, so that in float32 on the CPU it draws the same bits at every scale and decodes the same image.

Random streams: ``seed`` reproduces upstream's ``g_seed`` (one generator drawing over the whole batch, so an
image depends on the batch it is in); ``image_seeds`` gives every image its own generator, and image i then
equals upstream's run of that prompt alone (B=1) with ``g_seed=image_seeds[i]`` (the images are sampled one at
a time for that, as batched float arithmetic is not batch-invariant; ``per_image_passes=False`` batches them,
each still with its own generator). Neither: the global RNG, as upstream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .bsq_vae import BSQVAE
from .config import check_pair
from .rope2d import rope_cache
from .schedules import full_grid_of, vae_schedule
from .text_condition import TextCondition
from .transformer import Infinity

SAMPLING_PER_BITS = (1, 2, 4, 8, 16)  # run_infinity.py's choices; unused by autoregressive_infer_cfg at 4c27bbb


@dataclass
class InfinityOutput:
    bits: List[torch.Tensor]        # per scale: (B, 1, h, w, d) int64 on the VAE's grid (after un-patchify)
    summed_codes: torch.Tensor      # (B, d, H, W) float32: the decoder's input
    images: Optional[torch.Tensor]  # (B, 16H, 16W, 3) uint8 RGB (16 = the VAE's downsampling, 2^levels; upstream: BGR)


def sample_bits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0, rng: Optional[torch.Generator] = None) -> torch.Tensor:
    """upstream sample_with_top_k_top_p_also_inplace_modifying_logits_ with num_samples=1: logits (B, l, V)
    -> indices (B, l). Modifies ``logits`` in place."""
    B, l, V = logits.shape
    if top_k > 0:
        top_k = min(top_k, V)
        remove = logits < logits.topk(top_k, largest=True, sorted=False, dim=-1)[0].amin(dim=-1, keepdim=True)
        logits.masked_fill_(remove, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)
        sorted_remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        sorted_remove[..., -1:] = False
        logits.masked_fill_(sorted_remove.scatter(sorted_idx.ndim - 1, sorted_idx, sorted_remove), -torch.inf)
    return torch.multinomial(logits.softmax(dim=-1).view(-1, V), num_samples=1, replacement=True,
                             generator=rng).view(B, l, 1)[:, :, 0]


def _per_scale(name: str, values, n: int) -> List[float]:
    if isinstance(values, (int, float)):
        return [float(values)] * n
    values = [float(v) for v in values]
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but the scale schedule has {n} scales")
    return values


def _insertion_layers(cfg_insertion_layer, depth: int) -> Tuple[bool, List[int]]:
    items = [cfg_insertion_layer] if isinstance(cfg_insertion_layer, int) else list(cfg_insertion_layer)
    on_logits, layers = False, []
    for item in items:
        item = int(item)
        if item == 0:
            on_logits = True
        elif item < 0 and depth + item > 0:
            layers.append(depth + item)
        else:
            raise ValueError(f"cfg_insertion_layer {item} is not valid: use 0 (CFG on the logits) or -k with "
                             f"0 < k < depth={depth} (CFG on the output of layer depth-k); upstream never applies "
                             f"CFG on probabilities (1)")
    return on_logits, layers


def _validate(model: Infinity, vae: BSQVAE, cond: TextCondition, schedule, negative, cfgs, taus, top_k, top_p,
              sampling_per_bits, seed, image_seeds) -> bool:
    if not isinstance(cond, TextCondition):
        raise ValueError(f"cond must be a TextCondition, got {type(cond).__name__}")
    mcfg = model.cfg
    patchify = check_pair(mcfg, vae.cfg, "the transformer", "the VAE")
    if cond.channels != mcfg.text_channels:
        raise ValueError(f"the text features have {cond.channels} channels, the transformer expects {mcfg.text_channels}")
    if negative is not None:
        if not isinstance(negative, TextCondition):
            raise ValueError(f"negative must be a TextCondition, got {type(negative).__name__}")
        if negative.channels != mcfg.text_channels:
            raise ValueError(f"the negative text features have {negative.channels} channels, the transformer expects {mcfg.text_channels}")
        if negative.batch_size not in (1, cond.batch_size):
            raise ValueError(f"negative has {negative.batch_size} prompts: give one, or one per prompt ({cond.batch_size})")
    elif any(c != 1 for c in cfgs) and cond.max_len > mcfg.text_maxlen:
        raise ValueError(f"a prompt has {cond.max_len} tokens, more than the {mcfg.text_maxlen} rows of the learned "
                         f"unconditional embedding (cfg_uncond)")
    full_grid_of(schedule)
    if len(schedule) > model.lvl_embed.num_embeddings:
        raise ValueError(f"{len(schedule)} scales, but the transformer has level embeddings for {model.lvl_embed.num_embeddings}")
    if any(t <= 0 for t in taus):
        raise ValueError(f"tau_list must be positive, got {taus}")
    if int(top_k) != top_k or top_k < 0:
        raise ValueError(f"top_k must be a non-negative integer, got {top_k}")
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p}")
    if sampling_per_bits not in SAMPLING_PER_BITS:
        raise ValueError(f"sampling_per_bits must be one of {SAMPLING_PER_BITS}, got {sampling_per_bits}")
    if seed is not None and image_seeds is not None:
        raise ValueError("give seed (upstream's batch-wide stream) or image_seeds (one stream per image), not both")
    if image_seeds is not None and len(image_seeds) != cond.batch_size:
        raise ValueError(f"image_seeds has {len(image_seeds)} seeds for {cond.batch_size} prompts")
    return patchify


def pass_text_rows(model: Infinity, cond: TextCondition, negative: Optional[TextCondition], uses_cfg: bool, device):
    """The text features and lengths of the pass's rows: the prompts, then (with CFG) the negative prompts or
    the learned unconditional embedding's first lens[i] rows (infer_reference's construction)."""
    text, lens = cond.features.to(device=device, dtype=torch.float32), list(cond.lens)
    if not uses_cfg:
        return text, lens
    B = cond.batch_size
    if negative is None:
        un = text.clone()
        total = 0
        for le in lens:
            un[total:total + le] = model.cfg_uncond[:le]
            total += le
        un_lens = lens
    else:
        if negative.batch_size == 1 and B > 1:
            negative = TextCondition(negative.features.repeat(B, 1), negative.lens * B)
        un, un_lens = negative.features.to(device=device, dtype=torch.float32), list(negative.lens)
    return torch.cat((text, un), dim=0), lens + un_lens


@torch.no_grad()
def infer_reference(model: Infinity, vae: BSQVAE, cond: TextCondition, schedule: Sequence[Tuple[int, int, int]], *,
                    negative: Optional[TextCondition] = None, cfg_list: Union[float, Sequence[float]] = 3.0,
                    tau_list: Union[float, Sequence[float]] = 1.0, top_k: int = 0, top_p: float = 0.0,
                    cfg_insertion_layer: Union[int, Sequence[int]] = 0, sampling_per_bits: int = 1,
                    seed: Optional[int] = None, image_seeds: Optional[Sequence[int]] = None,
                    per_image_passes: bool = True, decode: bool = True) -> InfinityOutput:
    """Sample ``cond.batch_size`` images on the (1, h, w) ``schedule`` (see schedules.scale_schedule).

    cfg_list / tau_list: one value, or one per scale. negative: one prompt or one per prompt; None uses the
    learned unconditional embedding. cfg_insertion_layer: 0 = CFG on the logits, -k = on the output of
    layer depth-k (a list may combine both). top_k / top_p act on each bit's two logits.
    per_image_passes (with image_seeds): True runs each image alone, exactly upstream's B=1 run; False runs the
    batch in one pass, each image still drawing from its own generator (faster, but an image may then differ
    from its B=1 run wherever float rounding differs between batch sizes: seen on the CPU at tiny sizes).
    """
    schedule = [tuple(int(v) for v in s) for s in schedule]
    cfgs = _per_scale("cfg_list", cfg_list, len(schedule))
    taus = _per_scale("tau_list", tau_list, len(schedule))
    patchify = _validate(model, vae, cond, schedule, negative, cfgs, taus, top_k, top_p, sampling_per_bits, seed, image_seeds)
    mcfg = model.cfg
    on_logits, cfg_layers = _insertion_layers(cfg_insertion_layer, mcfg.depth)
    if image_seeds is not None and per_image_passes:
        # one image at a time: float arithmetic is not batch-invariant (a matmul over 2 rows may round a row
        # differently from one over 1 row), so only a B=1 run reproduces upstream's B=1 run exactly
        outs = []
        for i, s in enumerate(image_seeds):
            neg_i = None if negative is None else (negative if negative.batch_size == 1 else negative.select([i]))
            outs.append(infer_reference(model, vae, cond.select([i]), schedule, negative=neg_i, cfg_list=cfgs,
                                        tau_list=taus, top_k=top_k, top_p=top_p, cfg_insertion_layer=cfg_insertion_layer,
                                        sampling_per_bits=sampling_per_bits, seed=int(s), decode=decode))
        return InfinityOutput(bits=[torch.cat(b, 0) for b in zip(*(o.bits for o in outs))],
                              summed_codes=torch.cat([o.summed_codes for o in outs], 0),
                              images=torch.cat([o.images for o in outs], 0) if decode else None)
    device = model.pos_start.device
    if image_seeds is not None:  # one generator per image, one batched pass
        rng = [torch.Generator(device=device).manual_seed(int(s)) for s in image_seeds]
    else:
        rng = None if seed is None else torch.Generator(device=device).manual_seed(int(seed))
    vae_sched = vae_schedule(schedule, patchify)

    B = cond.batch_size
    uses_cfg = any(c != 1 for c in cfgs)
    bs = 2 * B if uses_cfg else B
    text, lens = pass_text_rows(model, cond, negative, uses_cfg, device)

    cond_BD, cond_gss, kv_text = model.condition(text, lens)
    blocks = model.all_blocks()
    ca_kv = [b.ca.project_kv(kv_text) for b in blocks]  # upstream projects per call: the same values
    last = cond_BD.unsqueeze(1).expand(bs, 1, -1) + model.pos_start.expand(bs, 1, -1)
    rope = rope_cache(mcfg.head_dim, schedule, full_grid_of(schedule), mcfg.rope2d_normalized_by_hw).to(device)

    bits_per_scale: List[torch.Tensor] = []
    summed_codes = 0
    start = 0
    model.reset_caches()
    try:
        for si, (_, h, w) in enumerate(schedule):
            cfg = cfgs[si]
            rope_si = rope[:, start:start + h * w]
            start += h * w
            layer_idx = 0
            for ci, chunk in enumerate(model.chunks()):
                if ci == 0 or not mcfg.add_lvl_embeding_only_first_block:
                    last = model.add_level_embedding(last, si)
                for block in chunk:
                    last = block(last, cond_gss, ca_kv[layer_idx], lens, rope_si)
                    if cfg != 1 and layer_idx in cfg_layers:
                        last = cfg * last[:B] + (1 - cfg) * last[B:]
                        last = torch.cat((last, last), 0)
                    layer_idx += 1
            if cfg != 1 and on_logits:
                logits = model.get_logits(last, cond_BD).mul(1 / taus[si])
                logits = cfg * logits[:B] + (1 - cfg) * logits[B:]
            else:
                logits = model.get_logits(last[:B], cond_BD[:B]).mul(1 / taus[si])

            logits = logits.reshape(B, -1, 2)
            if isinstance(rng, list):
                idx = torch.cat([sample_bits(logits[i:i + 1], top_k, top_p, g) for i, g in enumerate(rng)], 0)
            else:
                idx = sample_bits(logits, top_k, top_p, rng)
            idx = idx.reshape(B, h, w, -1)
            if patchify:  # (B, h, w, 4d) -> (B, 2h, 2w, d)
                idx = F.pixel_shuffle(idx.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
            idx = idx.unsqueeze(1)
            bits_per_scale.append(idx)

            codes = vae.bits_to_codes(idx)  # (B, d, 1, h', w')
            if si != len(schedule) - 1:
                summed_codes += vae.codes_to_grid(codes, vae_sched[-1])
                nxt = vae.codes_to_grid(summed_codes, vae_sched[si + 1]).squeeze(-3)
                if patchify:
                    nxt = F.pixel_unshuffle(nxt, 2)
                nxt = nxt.reshape(*nxt.shape[:2], -1).permute(0, 2, 1)
                last = model.word_embed(model.norm0_ve(nxt)).repeat(bs // B, 1, 1)
            else:
                summed_codes += codes
    finally:
        model.reset_caches()

    summed_codes = summed_codes.squeeze(-3)
    images = None
    if decode:
        img = (vae.decode(summed_codes) + 1) / 2
        images = img.permute(0, 2, 3, 1).mul_(255).to(torch.uint8)
    return InfinityOutput(bits=bits_per_scale, summed_codes=summed_codes, images=images)
