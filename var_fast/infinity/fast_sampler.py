"""The fast sampling loop of Infinity (the same semantics as reference_sampler.infer_reference).

What differs from the reference loop (exact in float32 except the random stream):
- per call, once: the text condition (cond_BD, every block's AdaLN gamma/scale/shift, the head's AdaLN), every
  block's cross-attention keys/values of the text (projected and rounded to bfloat16 once, not per scale)
  and the RoPE cache of the schedule; per sampler, once: each block's query scale exp(min(s, log 100));
- keys/values go into one cache per block preallocated for the schedule's tokens (no concatenation);
- AdaLN is var_fast's fused ops where the model's norm is LayerNorm (Infinity-2B's): LayerNorm + modulation,
  the gated residuals, and a block's last residual fused with the next AdaLN (the next block's or the head's);
  RMS-norm models keep the reference's norm formula in torch;
- the QKV epilogue (bias, cosine normalisation, query scale, RoPE, cache write) is one step, the bits of a
  scale are drawn (CFG mix, 1/tau, top-k/top-p, draw) by one step keyed by (seed, scale, image index) so an
  image does not depend on its batch, and the BSQ update (codes, upsample, accumulate, next input) is one step
  (native ops, reached through var_fast/infinity/fast_ops.py);
- on CUDA each scale's transformer pass (its input embedding, every block, the head) is a CUDA graph
  replayed with static buffers; nothing in the loop waits for the device: bad logits and bits set flags in a
  status word checked once after the last scale.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .. import ops
from ..fast_sampler import FastSampler, scale_seed
from . import fast_ops
from .blocks import MAX_SCALE_MUL, CrossAttnBlock, ada_norm
from .bsq_vae import BSQVAE
from .fast_cross_attention import TextKV
from .reference_sampler import InfinityOutput, _insertion_layers, _per_scale, _validate, pass_text_rows
from .rope2d import rope_cache
from .schedules import full_grid_of
from .text_condition import TextCondition
from .transformer import Infinity

BITS_VOCAB = 2  # check_status's vocabulary size for the bit ops' flags


class InfinityFastSampler:
    """``InfinityFastSampler(model, vae, dtype=torch.float32, cuda_graphs=True).sample(cond, schedule, ...)``.

    dtype: the transformer's matmuls (float32, or bfloat16/float16 as upstream's autocast runs them: the
    residual stream, norms, AdaLN, logits and sampling stay float32). The sampler sees the weights as they
    were when it was built (the query scales are read then)."""

    def __init__(self, model: Infinity, vae: BSQVAE, *, dtype: torch.dtype = torch.float32, cuda_graphs: bool = True):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        self.model, self.vae = model.eval(), vae.eval()
        self.dtype, self.cuda_graphs = dtype, cuda_graphs
        self.blocks: List[CrossAttnBlock] = model.all_blocks()
        # the blocks' linear layers in the compute dtype: their own, or a copy where they are in another dtype
        self.linears = [BlockLinears(b) for b in self.blocks]
        self.linears = [copy.deepcopy(lin).to(dtype) if any(p.dtype != dtype for p in lin.parameters()) else lin
                        for lin in self.linears]
        cfg = model.cfg
        self.H, self.c = cfg.num_heads, cfg.head_dim
        self.layer_norm = not cfg.rms_norm
        with torch.no_grad():
            self.head_scales = [b.sa.scale_mul_1H11.float().clamp_max(MAX_SCALE_MUL).exp().reshape(-1).to(dtype)
                                .contiguous() for b in self.blocks]
        # the level embedding is added before these layers (every chunk's first, or the first chunk's only)
        starts, i = [], 0
        for ci, chunk in enumerate(model.chunks()):
            if ci == 0 or not cfg.add_lvl_embeding_only_first_block:
                starts.append(i)
            i += len(chunk)
        self.level_layers = set(starts)
        self._graphs: Dict[tuple, "GraphedScales"] = {}

    # ---- per call ------------------------------------------------------------------------------------------
    def _condition(self, text: torch.Tensor, lens: List[int]):
        """-> cond_BD, per-block AdaLN (g1, g2, s1, s2, sh1, sh2) each (N, 1, C), the head's (scale, shift) or
        None, and every block's cross-attention (k, v) ready for fast_ops.cross_attention."""
        model = self.model
        cond_BD, cond_gss, kv_text = model.condition(text, lens)
        C = model.cfg.embed_dim
        mods = []
        with torch.autocast(text.device.type, enabled=False):  # upstream: the AdaLN parameters never under autocast
            for b in self.blocks:
                if b.shared_aln:
                    m = (b.ada_gss + cond_gss).unbind(2)
                else:
                    m = b.ada_lin(cond_gss.to(b.ada_lin[1].weight.dtype)).view(-1, 1, 6, C).unbind(2)
                mods.append(tuple(t.float().contiguous() for t in m))
            head = None
            if model.cfg.head_aln:
                scale, shift = model.head_nm.ada_lin(cond_BD.float()).view(-1, 1, 2, C).unbind(2)
                head = (scale.float().contiguous(), shift.float().contiguous())
        text_kv = [fast_ops.prepare_text_kv(*b.ca.project_kv(kv_text), lens) for b in self.blocks]
        return cond_BD, mods, head, text_kv

    # ---- one scale's transformer pass ----------------------------------------------------------------------
    def _modulate(self, x, scale, shift, eps):
        if self.layer_norm:
            return ops.adaln_modulate(x, scale, shift, eps)
        return ada_norm(x, scale, shift, True, eps)

    def _residual_modulate(self, x, y, gamma, scale, shift, eps):
        if self.layer_norm:
            return ops.gated_residual_adaln(x, y, gamma, scale, shift, eps)
        x = ops.gated_residual(x, y, gamma)
        return x, ada_norm(x, scale, shift, True, eps)

    def _lin(self, lin: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return lin(x.to(self.dtype))

    def _self_attention(self, i: int, h, cache, offset: int, rope_si) -> torch.Tensor:
        lin = self.linears[i]
        N, L, C = h.shape
        k_cache, v_cache = cache
        qkv = F.linear(h.to(self.dtype), lin.qkv.weight)
        q = fast_ops.qkv_to_cache(qkv, lin.q_bias, lin.v_bias, self.head_scales[i], k_cache, v_cache, offset,
                                  rope_si)
        kv_len = offset + L
        if FastSampler.attention_impl(h.device) == "native":
            o = ops.cached_attention(q, k_cache, v_cache, kv_len, 1.0)
        else:
            o = F.scaled_dot_product_attention(q, k_cache[:, :, :kv_len], v_cache[:, :, :kv_len], scale=1)
            o = o.transpose(1, 2).reshape(N, L, C)
        return self._lin(lin.sa_proj, o).float()

    def _cross_attention(self, i: int, x, text_kv) -> torch.Tensor:
        block, lin = self.blocks[i], self.linears[i]
        q = self._lin(lin.ca_q, block.ca_norm(x)).float()
        o = fast_ops.cross_attention(q, text_kv[i], block.ca.scale)
        return self._lin(lin.ca_proj, o).float()

    def _ffn(self, i: int, h) -> torch.Tensor:
        ffn = self.linears[i].ffn
        hd = h.to(self.dtype)
        if self.model.cfg.swiglu:
            return ffn.fc2(F.silu(ffn.fcg(hd), inplace=True).mul_(ffn.fc1(hd))).float()
        if FastSampler.attention_impl(h.device) == "native":  # fc1's bias and GELU in one launch
            return ffn.fc2(ops.bias_gelu(F.linear(hd, ffn.fc1.weight), ffn.fc1.bias)).float()
        return ffn(hd).float()

    def scale_logits(self, si: int, inp: torch.Tensor, cond: "ScaleCondition", caches, offset: int,
                     rope_si: torch.Tensor, B: int, cfg: float, cfg_layers: Sequence[int],
                     all_rows: bool) -> torch.Tensor:
        """One scale's pass (what a CUDA graph captures): the input (scale 0: the start tokens (N, 1, C);
        later: the previous scale's map (B, l, d) through norm0_ve/word_embed, repeated over the CFG rows),
        every block, the head -> float32 logits (N or B, l, 2d) (all rows when the CFG mix is on the logits)."""
        model, blocks = self.model, self.blocks
        N = cond.cond_BD.shape[0]
        lvl = model.lvl_embed.weight[si]
        if si == 0:
            x = inp.clone()
        else:
            x = model.word_embed(model.norm0_ve(inp)).float().repeat(N // B, 1, 1)
        mixing = cfg != 1
        last = len(blocks) - 1
        h = None
        for i, block in enumerate(blocks):
            g1, g2, s1, s2, sh1, sh2 = cond.mods[i]
            if h is None:  # a boundary before this block: level embedding, then its first AdaLN
                if i in self.level_layers:
                    x = x + lvl
                h = self._modulate(x, s1, sh1, block.eps)
            x = ops.gated_residual(x, self._self_attention(i, h, caches[i], offset, rope_si), g1)
            x, h = self._residual_modulate(x, self._cross_attention(i, x, cond.text_kv),
                                           cond.ca_gammas[i], s2, sh2, block.eps)
            y = self._ffn(i, h)
            boundary = (mixing and i in cfg_layers) or (i < last and (i + 1) in self.level_layers)
            if boundary:
                x, h = ops.gated_residual(x, y, g2), None
                if mixing and i in cfg_layers:  # CFG on this layer's output, as upstream
                    x = cfg * x[:B] + (1 - cfg) * x[B:]
                    x = torch.cat((x, x), 0)
            elif i < last:
                _, _, ns1, _, nsh1, _ = cond.mods[i + 1]
                x, h = self._residual_modulate(x, y, g2, ns1, nsh1, blocks[i + 1].eps)
            elif cond.head is not None:
                x, h = self._residual_modulate(x, y, g2, cond.head[0], cond.head[1], model.head_nm.eps)
            else:
                x, h = ops.gated_residual(x, y, g2), None
        rows = slice(None) if all_rows else slice(0, B)
        with torch.autocast(x.device.type, enabled=False):  # upstream: the head never under autocast
            if cond.head is not None:
                if h is None:
                    h = self._modulate(x[rows], cond.head[0][rows], cond.head[1][rows], model.head_nm.eps)
                else:
                    h = h[rows]
                return model.head(h.float()).float()
            return model.head(x[rows].float()).float()

    # ---- the loop ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, cond: TextCondition, schedule: Sequence[Tuple[int, int, int]], *,
               negative: Optional[TextCondition] = None, cfg_list: Union[float, Sequence[float]] = 3.0,
               tau_list: Union[float, Sequence[float]] = 1.0, top_k: int = 0, top_p: float = 0.0,
               cfg_insertion_layer: Union[int, Sequence[int]] = 0, seed: int = 0, image_offset: int = 0,
               decode: bool = True) -> InfinityOutput:
        """``cond.batch_size`` images on the (1, h, w) ``schedule``; the arguments as infer_reference's. Image b's
        bits are drawn from (seed, scale, image_offset + b) alone: the same image whatever batch it is in."""
        schedule = [tuple(int(v) for v in s) for s in schedule]
        cfgs = _per_scale("cfg_list", cfg_list, len(schedule))
        taus = _per_scale("tau_list", tau_list, len(schedule))
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        if isinstance(image_offset, bool) or not isinstance(image_offset, int) or image_offset < 0:
            raise ValueError(f"image_offset must be an integer >= 0, got {image_offset!r}")
        patchify = _validate(self.model, self.vae, cond, schedule, negative, cfgs, taus, top_k, top_p, 1, seed, None)
        on_logits, cfg_layers = _insertion_layers(cfg_insertion_layer, self.model.cfg.depth)
        top_k, top_p = int(top_k), float(top_p)
        device = self.model.pos_start.device
        # reduced precision as upstream runs it: autocast (its AdaLN, head and norms in float32); no weight-cast
        # cache, which CUDA graph capture does not allow
        with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype != torch.float32, cache_enabled=False):
            return self._run(cond, schedule, negative, cfgs, taus, top_k, top_p, on_logits, cfg_layers, seed,
                             image_offset, patchify, decode)

    def _run(self, cond, schedule, negative, cfgs, taus, top_k, top_p, on_logits, cfg_layers, seed, image_offset,
             patchify, decode) -> InfinityOutput:
        model = self.model
        device = model.pos_start.device
        B = cond.batch_size
        text, lens = pass_text_rows(model, cond, negative, any(c != 1 for c in cfgs), device)
        N = len(lens)
        cond_BD, mods, head, text_kv = self._condition(text, lens)
        C = model.cfg.embed_dim
        ca_gammas = [(b.ca_gamma.detach().float().reshape(1, 1, C) if isinstance(b.ca_gamma, torch.Tensor)
                      else torch.ones(1, 1, C, device=device)).expand(N, 1, C).contiguous() for b in self.blocks]
        condition = ScaleCondition(cond_BD, mods, head, text_kv, lens, ca_gammas)
        total = sum(h * w for _, h, w in schedule)
        work = self._workspace(N, B, lens, schedule, cfgs, cfg_layers, on_logits, device, total)
        work.set_condition(condition)

        d = self.vae.cfg.codebook_dim
        H, W = schedule[-1][1:]
        if patchify:
            H, W = 2 * H, 2 * W
        summed = torch.zeros(B, d, H, W, device=device, dtype=torch.float32)
        status = ops.new_status(device)
        inp = (cond_BD.unsqueeze(1).expand(N, 1, -1) + model.pos_start.expand(N, 1, -1)).float().contiguous()
        bits_out: List[torch.Tensor] = []
        offset = 0
        for si, (_, h, w) in enumerate(schedule):
            cfg = cfgs[si]
            logits = work.logits(si, inp, offset)
            key = scale_seed(seed, si)
            if cfg != 1 and on_logits:
                bits = fast_ops.sample_cfg_bits(logits, cfg, taus[si], top_k, top_p, key, image_offset, status)
            else:
                bits = fast_ops.sample_bits(logits, taus[si], top_k, top_p, key, image_offset, status)
            grid = bits.reshape(B, h, w, -1)
            nh, nw = schedule[si + 1][1:] if si + 1 < len(schedule) else (0, 0)
            if patchify:  # the op takes the next scale's VAE grid
                nh, nw = 2 * nh, 2 * nw
            nxt = fast_ops.bsq_scale_update(grid, summed, nh, nw, patchify, status)
            bits_out.append(fast_ops.scale_bits_layout(bits, h, w, patchify))
            offset += h * w
            inp = nxt
        ops.check_status(status, BITS_VOCAB)  # the loop's one wait for the device

        # channels-last, as the reference's sum of trilinear outputs is: the decoder's convolutions then round
        # as they do there (the same uint8 image)
        summed = summed.contiguous(memory_format=torch.channels_last)
        images = None
        if decode:
            img = (self.vae.decode(summed) + 1) / 2
            images = img.permute(0, 2, 3, 1).mul_(255).to(torch.uint8)
        return InfinityOutput(bits=bits_out, summed_codes=summed, images=images)

    def _workspace(self, N, B, lens, schedule, cfgs, cfg_layers, on_logits, device, total):
        plan = ScalePlan(self, N, B, tuple(lens), tuple(schedule), tuple(cfgs), tuple(cfg_layers), on_logits)
        if self._graphed(device):
            key = (plan.key(), device)
            if key not in self._graphs:
                self._graphs.clear()  # one shape's graphs and caches alive at a time
                self._graphs[key] = GraphedScales(plan, device, total)
            return self._graphs[key]
        return EagerScales(plan, device, total)

    def _graphed(self, device: torch.device) -> bool:
        return device.type == "cuda" and self.cuda_graphs


class ScaleCondition:
    """Everything a call's scales share: the text condition and what is derived from it once."""

    def __init__(self, cond_BD, mods, head, text_kv, lens, ca_gammas):
        self.cond_BD, self.mods, self.head, self.text_kv = cond_BD, mods, head, text_kv
        self.lens, self.ca_gammas = list(lens), ca_gammas

    def tensors(self) -> List[torch.Tensor]:
        flat = [self.cond_BD] + [t for m in self.mods for t in m] + [t for kv in self.text_kv
                                                                     for t in (kv.k, kv.v, kv.key_mask)]
        flat += list(self.ca_gammas) + (list(self.head) if self.head is not None else [])
        return flat

    def like(self, tensors: List[torch.Tensor]) -> "ScaleCondition":
        """The same structure around other tensors (a GraphedScales' static copies)."""
        it = iter(tensors)
        cond_BD = next(it)
        mods = [tuple(next(it) for _ in m) for m in self.mods]
        text_kv = [TextKV(next(it), next(it), next(it), kv.lens) for kv in self.text_kv]
        ca_gammas = [next(it) for _ in self.ca_gammas]
        head = None if self.head is None else (next(it), next(it))
        return ScaleCondition(cond_BD, mods, head, text_kv, self.lens, ca_gammas)


class ScalePlan:
    """The shapes and settings a scale's pass is built for (what a CUDA graph depends on)."""

    def __init__(self, sampler: InfinityFastSampler, N, B, lens, schedule, cfgs, cfg_layers, on_logits):
        self.sampler, self.N, self.B, self.lens, self.schedule = sampler, N, B, lens, schedule
        self.cfgs, self.cfg_layers, self.on_logits = cfgs, cfg_layers, on_logits
        starts = [0]
        for _, h, w in schedule:
            starts.append(starts[-1] + h * w)
        self.starts = starts

    def key(self) -> tuple:
        # layer CFG mixes with the scale's cfg as a constant inside the graph
        cfgs = self.cfgs if self.cfg_layers else tuple(c != 1 for c in self.cfgs)
        return (self.N, self.B, self.lens, self.schedule, cfgs, self.cfg_layers, self.on_logits,
                self.sampler.dtype)

    def run(self, si, inp, cond, caches, ropes) -> torch.Tensor:
        cfg = self.cfgs[si]
        rope_si = ropes[si]
        all_rows = cfg != 1 and self.on_logits
        return self.sampler.scale_logits(si, inp, cond, caches, self.starts[si], rope_si, self.B, cfg,
                                         self.cfg_layers, all_rows)


class BlockLinears(torch.nn.Module):
    """The layers of a block the fast loop runs in the compute dtype (the block's own, or a reduced-precision copy)."""

    def __init__(self, b: CrossAttnBlock):
        super().__init__()
        self.qkv, self.sa_proj, self.ca_q, self.ca_proj, self.ffn = b.sa.mat_qkv, b.sa.proj, b.ca.mat_q, b.ca.proj, b.ffn
        self.q_bias, self.v_bias = b.sa.q_bias, b.sa.v_bias


def allocate_kv_caches(sampler: InfinityFastSampler, N: int, device, total: int):
    """One (k, v) pair of (N, H, total, c) caches per block, in the compute dtype: every scale writes at its offset."""
    shape = (N, sampler.H, total, sampler.c)
    return [(torch.empty(shape, device=device, dtype=sampler.dtype), torch.empty(shape, device=device, dtype=sampler.dtype))
            for _ in sampler.blocks]


class EagerScales:
    """Runs each scale's pass directly (CPU, or CUDA without graphs)."""

    def __init__(self, plan: ScalePlan, device, total: int):
        self.plan = plan
        self.caches = allocate_kv_caches(plan.sampler, plan.N, device, total)
        model = plan.sampler.model
        rope = rope_cache(model.cfg.head_dim, plan.schedule, full_grid_of(plan.schedule),
                          model.cfg.rope2d_normalized_by_hw).to(device)
        self.rope = [rope[:, a:b].contiguous() for a, b in zip(plan.starts[:-1], plan.starts[1:])]  # per scale

    def set_condition(self, cond: ScaleCondition) -> None:
        self.cond = cond

    def logits(self, si: int, inp: torch.Tensor, offset: int) -> torch.Tensor:
        return self.plan.run(si, inp, self.cond, self.caches, self.rope)


class GraphedScales(EagerScales):
    """One CUDA graph per scale for a plan: the input embedding, the blocks and the head (the draw and the BSQ
    update stay outside, so every call draws fresh bits). The condition enters through static buffers copied
    in by ``set_condition``, the scale's input through a static buffer copied in before each replay."""

    def __init__(self, plan: ScalePlan, device, total: int):
        super().__init__(plan, device, total)
        self.static: Optional[ScaleCondition] = None
        self.inputs: Dict[int, torch.Tensor] = {}
        self.graphs, self.outputs = {}, {}
        self.pool = None

    def set_condition(self, cond: ScaleCondition) -> None:
        if self.static is None:
            self.static = cond.like([t.clone() for t in cond.tensors()])
        else:
            for dst, src in zip(self.static.tensors(), cond.tensors()):
                dst.copy_(src)

    def _capture(self, si: int) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph (allocator, library handles)
            self.plan.run(si, self.inputs[si], self.static, self.caches, self.rope)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.outputs[si] = self.plan.run(si, self.inputs[si], self.static, self.caches, self.rope)
        self.pool = graph.pool()
        self.graphs[si] = graph

    def logits(self, si: int, inp: torch.Tensor, offset: int) -> torch.Tensor:
        if si not in self.inputs:
            self.inputs[si] = torch.empty_like(inp, memory_format=torch.contiguous_format)
        self.inputs[si].copy_(inp)
        if si not in self.graphs:
            self._capture(si)  # the warm-up pass already left this scale's k, v in the caches
        self.graphs[si].replay()
        return self.outputs[si]


__all__ = ["InfinityFastSampler"]
