"""The fast sampling loop on var_fast's native ops (CPU or CUDA kernels).

Differences from the reference loop, all exact in float32 except the random stream:
- the AdaLN modulation of every block and of the head is computed once per call, not per scale
  (the class condition does not change across scales);
- keys/values go into one preallocated cache per block (no concatenation, no reallocation);
- LayerNorm + modulation, the QKV epilogue, attention and the gated residuals are fused ops; a block's
  gated residual and the next AdaLN modulation (inside a block, across block boundaries, and from the
  last block into the head) are one op, and on the kernel path fc1's bias and GELU are one op after a
  bias-free GEMM: 9 launches per block and scale on the CUDA path (tests/test_launch_count.py keeps that number);
- what depends on the weights alone (the attention's per-head query scale, the level + position
  embedding) is computed when the sampler is built, not per scale; a sampler therefore sees weights as
  they were when it was built;
- a scale's input (word embedding of the previous scale's map, plus level/position, doubled for CFG)
  is computed inside the scale's pass, so on CUDA it is part of the scale's graph;
- CFG mixing, top-k/top-p filtering and the draw are one op whose Philox stream is keyed by
  (seed, image index, token index), so an image does not depend on the rest of its batch;
- the quantizer's per-scale update (lookup, bicubic upsample, Phi, accumulate, area downsample) is one op;
- nothing in the loop waits for the device: bad logits and out-of-range tokens set flags in a device
  status word, checked once after the last scale (with the errors the ops would have raised).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from . import ops
from .models import VAR, VQVAE
from .models.quantizer import Phi, phi_index
from .reference.autoregressive import TeacherForce, smooth_tau
from .reference.sampling import cfg_mix, gumbel_softmax, top_k_top_p_filter_
from .schedules import Schedule, per_scale

_MASK64 = (1 << 64) - 1


def scale_seed(seed: int, si: int) -> int:
    """A distinct 63-bit Philox key per (seed, scale): splitmix64 of the pair."""
    z = (seed * 0x9E3779B97F4A7C15 + (si + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


@dataclass(frozen=True)
class RowGroup:
    """Rows [start, stop) of a batch drawn with their own settings (one served request): with ``groups=``
    each group's rows are drawn exactly as ``sample`` would draw them for that group alone, so unrelated
    requests can share a transformer pass (rows in no group, padding, get token 0)."""
    start: int
    stop: int
    seed: int
    cfg: float
    top_k: int
    top_p: float
    image_offset: int = 0


class FastSampler:
    def __init__(self, var: VAR, vae: VQVAE, dtype: torch.dtype = torch.float32, cuda_graphs: bool = True):
        if dtype != torch.float32:
            # a reduced-precision copy of the transformer; the head stays float32 (logits and sampling in float32)
            var = copy.deepcopy(var).to(dtype)
            var.head_nm.float()
            var.head.float()
        self.var, self.vae, self.dtype = var, vae, dtype
        self.cuda_graphs = cuda_graphs
        self._graphs = {}
        quant = vae.quantize
        layers = quant.quant_resi.layers()
        C = quant.Cvae
        weights, biases, ratios = [], [], []
        for layer in layers:
            if isinstance(layer, Phi):
                weights.append(layer.weight.detach().float())
                biases.append(layer.bias.detach().float())
                ratios.append(layer.resi_ratio)
            else:  # identity Phi: ratio 0 makes the blend return h exactly
                weights.append(torch.zeros(C, C, 3, 3, device=quant.embedding.weight.device))
                biases.append(torch.zeros(C, device=quant.embedding.weight.device))
                ratios.append(0.0)
        if any(w.shape[-1] != 3 for w in weights):
            raise NotImplementedError("the fast backend supports 3x3 Phi convolutions only")
        self.phi_weights = torch.stack(weights).contiguous()
        self.phi_biases = torch.stack(biases).contiguous()
        self.phi_ratios = ratios
        self.codebook = quant.embedding.weight.detach().float().contiguous()
        S = len(var.patch_nums)
        self.phi_of_scale = [phi_index(si, S, len(layers)) for si in range(S)]
        # Derived from the weights alone: computed once here instead of on every scale of every call.
        with torch.no_grad():
            self.attn_head_scales = [block.attn.head_scale().reshape(-1).contiguous() if block.attn.attn_l2_norm
                                     else None for block in var.blocks]
            self.level_pos = var.level_pos().detach()

    # ---- conditioning that does not change across scales ---------------------------------------------
    def _modulations(self, cond_BD: torch.Tensor):
        var = self.var
        cond = var.shared_ada_lin(cond_BD)
        per_block = [block.modulation(cond) for block in var.blocks]
        head = var.head_nm.modulation(cond_BD.float())
        return per_block, head

    def _block(self, i: int, x, h, mods, k_cache, v_cache, offset, next_scale, next_shift, next_eps):
        """Block i on the residual stream x and its modulated input h -> (x, the next modulated input):
        the next block's first modulation (or the head's) is fused into this block's last residual."""
        block = self.var.blocks[i]
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mods
        attn = block.attn
        native = self.attention_impl(x.device) == "native"
        qkv = F.linear(h, attn.mat_qkv.weight)
        q = ops.qkv_to_cache(qkv, attn.q_bias, attn.v_bias, self.attn_head_scales[i], k_cache, v_cache, offset)
        kv_len = offset + x.shape[1]
        if native:
            o = ops.cached_attention(q, k_cache, v_cache, kv_len, attn.scale)
        else:
            B2, L, C = x.shape
            o = F.scaled_dot_product_attention(q, k_cache[:, :, :kv_len], v_cache[:, :, :kv_len], scale=attn.scale)
            o = o.transpose(1, 2).reshape(B2, L, C)
        x, h = ops.gated_residual_adaln(x, attn.proj(o), gamma1, scale2, shift2, block.ln_wo_grad.eps)
        ffn = block.ffn
        if native:  # one launch for fc1's bias and GELU after the bias-free GEMM
            y = ffn.fc2(ops.bias_gelu(F.linear(h, ffn.fc1.weight), ffn.fc1.bias))
        else:  # the CPU: torch's own fc1 + GELU, bit for bit the reference
            y = ffn(h)
        return _residual_then_modulate(x, y, gamma2, next_scale, next_shift, next_eps)

    @staticmethod
    def attention_impl(device: torch.device) -> str:
        """Which implementation the block's attention and FFN epilogue run on. On the CPU torch's SDPA
        measured about 2x faster than var_fast's cached_attention (benchmarks/RESULTS.md), so the CPU path
        uses SDPA on cache views (and torch's fc1 + GELU); on CUDA the native kernels ("native")."""
        return "sdpa" if device.type == "cpu" else "native"

    def scale_input(self, si: int, inp: torch.Tensor, offset: int) -> torch.Tensor:
        """A scale's tokens (2B, l, C): scale 0's start tokens as given; later scales' word embedding of
        ``inp`` (B, l, Cvae) (the previous scale's map, token-major) plus level/position, both CFG halves
        written by one broadcast add."""
        if si == 0:
            return inp
        e = self.var.word_embed(inp)
        B, l, C = e.shape
        return torch.add(e.unsqueeze(0).expand(2, B, l, C), self.level_pos[:, offset:offset + l]).view(2 * B, l, C)

    def scale_logits(self, si: int, inp: torch.Tensor, block_mods, head_scale, head_shift, caches,
                     offset: int) -> torch.Tensor:
        """One scale's pass (what a CUDA graph captures): its input (``scale_input``), every block, then
        the head: float32 logits (2B, l, V). The profiler regions name the parts for the launch count."""
        var = self.var
        blocks = var.blocks
        with record_function("var_fast.scale_input"):
            x = self.scale_input(si, inp, offset)
            _, _, scale1, _, shift1, _ = block_mods[0]
            h = ops.adaln_modulate(x, scale1, shift1, blocks[0].ln_wo_grad.eps)
        for i, (mods, (kc, vc)) in enumerate(zip(block_mods, caches)):
            if i + 1 < len(blocks):
                _, _, next_scale, _, next_shift, _ = block_mods[i + 1]
                next_eps = blocks[i + 1].ln_wo_grad.eps
            else:
                next_scale, next_shift, next_eps = head_scale, head_shift, var.head_nm.ln_wo_grad.eps
            with record_function("var_fast.block"):
                x, h = self._block(i, x, h, mods, kc, vc, offset, next_scale, next_shift, next_eps)
        with record_function("var_fast.head"):
            return var.head(h).float()

    def _workspace(self, B: int, device: torch.device, dtype: torch.dtype, kv_length: Optional[int] = None):
        """KV caches of ``kv_length`` positions (all scales by default; a CoDe drafter needs its scales only)."""
        kv_length = kv_length or self.var.L
        if device.type == "cuda" and self.cuda_graphs:
            key = (B, device, dtype, kv_length)
            if key not in self._graphs:
                self._graphs.clear()  # keep one batch size's graphs and caches alive at a time
                self._graphs[key] = GraphedScales(self, B, device, dtype, kv_length)
            return self._graphs[key]
        return EagerScales(self, B, device, dtype, kv_length)

    @torch.no_grad()
    def sample(self, label_B: torch.Tensor, *, seed: int, cfg: float = 1.5, top_k: Schedule = 0, top_p: float = 0.0,
               more_smooth: bool = False, image_offset: int = 0,
               on_scale: Optional[Callable[[int, int], None]] = None,
               teacher_force: Optional[TeacherForce] = None, temperature: Schedule = 1.0,
               refiner: Optional["FastSampler"] = None,
               draft_steps: Optional[int] = None, groups: Optional[Sequence[RowGroup]] = None,
               on_f_hat: Optional[Callable[[int, torch.Tensor], None]] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """label_B (B,) -> (f_hat (B, Cvae, H, W) float32, per-scale tokens). Image b of the batch draws
        its randomness from (seed, image_offset + b). ``teacher_force`` as in the reference loop
        (``h_BChw`` is None unless more_smooth). ``top_k`` / ``temperature``: one value or one per scale.
        ``groups``: per-request rows with their own seed, offset and settings (``seed``, ``cfg``, ``top_k``,
        ``top_p``, ``image_offset`` are then unused; not with more_smooth or a temperature schedule).
        ``on_f_hat(si, f_hat)``: the accumulated f_hat after each scale (previews; read only).

        With ``refiner`` (collaborative decoding, CoDe) this model drafts scales 0..draft_steps-1; the
        refiner then fills its KV cache with the drafted scales scale by scale (the same attention as
        CoDe's block-causal prefill) and samples the remaining scales."""
        if groups is not None and more_smooth:
            raise ValueError("groups= is not supported with more_smooth")
        S = len(self.var.patch_nums)
        top_ks, temps = per_scale("top_k", top_k, S), per_scale("temperature", temperature, S)
        args = (label_B, seed, cfg, top_ks, top_p, temps, more_smooth, image_offset, on_scale, teacher_force,
                groups, on_f_hat)
        if refiner is None:
            f_hat, tokens, _ = self._run(*args)
            return f_hat, tokens
        drafted = self._run(*args, stop=draft_steps)
        f_hat, tokens, _ = refiner._run(*args, drafted=drafted)
        return f_hat, tokens

    def _run(self, label_B, seed, cfg, top_ks, top_p, temps, more_smooth, image_offset, on_scale, teacher_force,
             groups=None, on_f_hat=None, stop: Optional[int] = None, drafted=None):
        """Scales 0..stop-1 (all by default) -> (f_hat, tokens, Cvae-space inputs of scales 1..). With
        ``drafted`` = another model's (f_hat, tokens, inputs) of its first scales, those scales only
        fill this model's KV cache and f_hat continues from there."""
        var = self.var
        B = label_B.shape[0]
        pns = var.patch_nums
        S = len(pns)
        device = label_B.device
        end = S if stop is None else stop
        with record_function("var_fast.call_setup"):  # profiler regions: benchmarks/gpu_check/launch_count.py
            cond_BD = var.class_emb(torch.cat((label_B, torch.full_like(label_B, var.num_classes))))
            block_mods, (head_scale, head_shift) = self._modulations(cond_BD)
            head_scale, head_shift = head_scale.float(), head_shift.float()
            lvl_pos = self.level_pos
            dtype = cond_BD.dtype
            work = self._workspace(B, device, dtype, kv_length=sum(pn * pn for pn in pns[:end]))
            work.set_condition(block_mods, head_scale, head_shift)
            first_l = var.first_l
            inp = (cond_BD.unsqueeze(1).expand(2 * B, first_l, -1) + var.pos_start.expand(2 * B, first_l, -1)
                   + lvl_pos[:, :first_l])
            if drafted is None:
                f_hat = torch.zeros(B, var.Cvae, pns[-1], pns[-1], device=device, dtype=torch.float32)
                forced_tokens, forced_inputs = [], []
            else:
                f_hat, forced_tokens, forced_inputs = drafted
            status = ops.new_status(device)
        tokens: List[torch.Tensor] = []
        inputs: List[torch.Tensor] = []
        offset = 0
        for si in range(end):
            with record_function("var_fast.scale"):
                pn = pns[si]
                l = pn * pn
                next_size = pns[si + 1] if si + 1 < S else 0
                if si < len(forced_tokens):  # a drafted scale: into this model's KV cache only
                    work.logits(si, inp, offset)
                    idx, nxt = forced_tokens[si], forced_inputs[si]
                else:
                    idx, nxt = self._draw_and_update(si, work.logits(si, inp, offset), f_hat, seed, cfg * si / (S - 1),
                                                     top_ks[si], top_p, temps[si], more_smooth, image_offset,
                                                     teacher_force, status, groups)
                tokens.append(idx)
                inputs.append(nxt)
                offset += l
                if si >= len(forced_tokens):
                    if on_f_hat is not None:
                        on_f_hat(si, f_hat)
                    if on_scale is not None:
                        on_scale(si, S)
                if next_size:  # the next scale's map, token-major (B, l, Cvae): embedded inside its pass
                    inp = nxt.view(B, var.Cvae, -1).transpose(1, 2)
        ops.check_status(status, var.V)  # the loop's one wait for the device
        return f_hat, tokens, inputs

    def _draw_and_update(self, si, logits, f_hat, seed, t, top_k, top_p, temperature, more_smooth, image_offset,
                         teacher_force, status, groups=None):
        """One scale's draw from its logits (2B, l, V) and the quantizer update -> (tokens, next input)."""
        var = self.var
        pns = var.patch_nums
        S = len(pns)
        pn = pns[si]
        B, l = logits.shape[0] // 2, pn * pn
        ratio = si / (S - 1)
        if groups is not None:  # requests batched together, each drawn with its own seed and settings
            idx = self._draw_groups(logits, si, ratio, groups, status)
            h_BChw = None
        elif not more_smooth:
            if temperature == 1:
                idx = ops.sample_cfg_top_k_top_p(logits, t, top_k, top_p, scale_seed(seed, si),
                                                 row_offset=image_offset * l, status=status)
            else:  # CoDe's order: filter at temperature 1, then divide the kept logits by the temperature
                mixed = top_k_top_p_filter_(cfg_mix(logits, t), top_k, top_p).div_(temperature)
                idx = ops.sample_top_k_top_p(mixed, 0, 0.0, scale_seed(seed, si), row_offset=image_offset * l,
                                             status=status)
            h_BChw = None
        else:  # visualisation mode: soft Gumbel mix of codes (not a hot path)
            g = torch.Generator(device=logits.device)
            g.manual_seed(scale_seed(seed, si))
            mixed = top_k_top_p_filter_(cfg_mix(logits, t), top_k, top_p)
            idx = torch.multinomial((mixed / temperature).softmax(-1).view(-1, var.V), 1, generator=g).view(B, l)
            soft = gumbel_softmax(mixed.mul(1 + ratio), tau=smooth_tau(ratio), rng=g)
            h_BChw = (soft @ self.codebook.unsqueeze(0)).transpose(1, 2).reshape(B, var.Cvae, pn, pn)
        if teacher_force is not None:
            idx, h_BChw = teacher_force(si, idx, h_BChw)
        k = self.phi_of_scale[si]
        next_size = pns[si + 1] if si + 1 < S else 0
        if h_BChw is None:
            nxt = ops.quant_sampler_step(idx, self.codebook, f_hat, self.phi_weights[k], self.phi_biases[k],
                                         self.phi_ratios[k], next_size, status=status)
        else:
            nxt = self._soft_step(si, f_hat, h_BChw, next_size)
        return idx, nxt

    @staticmethod
    def _draw_groups(logits: torch.Tensor, si: int, ratio: float, groups: Sequence[RowGroup],
                     status: torch.Tensor) -> torch.Tensor:
        """Each group's rows drawn by the sampling op on that group's (conditional, unconditional) rows only."""
        B, l = logits.shape[0] // 2, logits.shape[1]
        idx = torch.zeros(B, l, dtype=torch.long, device=logits.device)
        for g in groups:
            rows = torch.cat((logits[g.start:g.stop], logits[B + g.start:B + g.stop]))
            idx[g.start:g.stop] = ops.sample_cfg_top_k_top_p(rows, g.cfg * ratio, g.top_k, g.top_p,
                                                             scale_seed(g.seed, si), row_offset=g.image_offset * l,
                                                             status=status)
        return idx

    def _soft_step(self, si: int, f_hat: torch.Tensor, h_BChw: torch.Tensor, next_size: int) -> torch.Tensor:
        """Quantizer update for an embedded (soft) code map, through the same resampling/Phi ops."""
        k = self.phi_of_scale[si]
        H = f_hat.shape[-1]
        if h_BChw.shape[-1] != H:
            h_BChw = ops.bicubic_upsample(h_BChw.contiguous(), H)
        f_hat.add_(ops.phi_blend(h_BChw, self.phi_weights[k], self.phi_biases[k], self.phi_ratios[k]))
        return ops.area_downsample(f_hat, next_size) if next_size else f_hat.new_empty(0)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Images in [-1, 1] -> per-scale tokens through the native encoder loop."""
        f = self.vae.quant_conv(self.vae.encoder(x)).float().contiguous()
        return ops.quant_encode(f, self.codebook, self.phi_weights, self.phi_biases, self.phi_of_scale,
                                self.phi_ratios[0], self.var.patch_nums)


def _residual_then_modulate(x, y, gamma, scale, shift, eps):
    """(x + gamma * y, the next modulated input): one fused op, or, when the next modulation is in
    another dtype (the float32 head of a reduced-precision model), the two ops with a cast between."""
    if scale.dtype == x.dtype:
        return ops.gated_residual_adaln(x, y, gamma, scale, shift, eps)
    x = ops.gated_residual(x, y, gamma)
    return x, ops.adaln_modulate(x.float(), scale, shift, eps)


def allocate_kv_caches(var: VAR, B: int, device, dtype, length: Optional[int] = None):
    """One (k, v) pair of (2B, H, L, c) caches per block: every scale writes at its offset."""
    H, c, L = var.num_heads, var.C // var.num_heads, length or var.L
    return [(torch.empty(2 * B, H, L, c, device=device, dtype=dtype),
             torch.empty(2 * B, H, L, c, device=device, dtype=dtype)) for _ in var.blocks]


class EagerScales:
    """Runs each scale's transformer pass directly (CPU, or CUDA without graphs)."""

    def __init__(self, sampler: FastSampler, B: int, device, dtype, kv_length: Optional[int] = None):
        self.sampler = sampler
        self.dtype = dtype
        self.caches = allocate_kv_caches(sampler.var, B, device, dtype, kv_length)

    def set_condition(self, block_mods, head_scale, head_shift) -> None:
        self.block_mods, self.head_scale, self.head_shift = block_mods, head_scale, head_shift

    def logits(self, si: int, inp: torch.Tensor, offset: int) -> torch.Tensor:
        # contiguous and in the model's dtype, as GraphedScales' static input holds it (the same bits)
        inp = inp.to(self.dtype).contiguous()
        with record_function("var_fast.scale_graph"):
            return self.sampler.scale_logits(si, inp, self.block_mods, self.head_scale, self.head_shift, self.caches,
                                             offset)


class GraphedScales:
    """One CUDA graph per scale for a batch size: the transformer pass and the head (the sampling and
    quantizer ops stay outside, so every call draws fresh randomness). The class condition enters
    through static buffers, the scale's tokens through a static input copied in before each replay."""

    def __init__(self, sampler: FastSampler, B: int, device, dtype, kv_length: Optional[int] = None):
        var = sampler.var
        self.sampler = sampler
        self.caches = allocate_kv_caches(var, B, device, dtype, kv_length)
        self.mods = [torch.empty(2 * B, 1, 6, var.C, device=device, dtype=dtype) for _ in var.blocks]
        self.head = torch.empty(2 * B, 1, 2, var.C, device=device, dtype=torch.float32)
        # scale 0: the start tokens (2B, first_l, C); later scales: the previous map (B, pn*pn, Cvae)
        self.inputs = [torch.empty(2 * B, var.first_l, var.C, device=device, dtype=dtype)] + [
            torch.empty(B, pn * pn, var.Cvae, device=device, dtype=dtype) for pn in var.patch_nums[1:]]
        self.graphs, self.outputs = {}, {}
        self.pool = None

    def set_condition(self, block_mods, head_scale, head_shift) -> None:
        for buf, mods in zip(self.mods, block_mods):
            buf.copy_(torch.stack(mods, dim=2))
        self.head.copy_(torch.stack((head_scale, head_shift), dim=2))

    def _run(self, si: int, offset: int) -> torch.Tensor:
        mods = [list(buf.unbind(2)) for buf in self.mods]
        scale, shift = self.head.unbind(2)
        with record_function("var_fast.scale_graph"):
            return self.sampler.scale_logits(si, self.inputs[si], mods, scale, shift, self.caches, offset)

    def _capture(self, si: int, offset: int) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph (allocator, library handles)
            self._run(si, offset)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.outputs[si] = self._run(si, offset)
        self.pool = graph.pool()
        self.graphs[si] = graph

    def logits(self, si: int, inp: torch.Tensor, offset: int) -> torch.Tensor:
        self.inputs[si].copy_(inp)
        if si not in self.graphs:
            self._capture(si, offset)  # the warm-up pass already left this scale's k, v in the caches
        self.graphs[si].replay()
        return self.outputs[si]
