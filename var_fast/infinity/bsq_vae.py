"""Infinity's BSQ VAE (upstream AutoEncoder of infinity/models/bsq_vae/flux_vqgan.py as vae_model builds it
for the published checkpoints): encoder, decoder and the multi-scale BSQ quantizer, with upstream's exact
state-dict keys. The quantizer is registered twice, as upstream does (``quantizer`` and ``quantize``)."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bsq_quantizer import INTERPOLATE_UP, MultiScaleBSQ
from .config import BSQVAEConfig
from .vae_blocks import Decoder, Encoder


class BSQVAE(nn.Module):
    def __init__(self, cfg: BSQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.codebook_dim = self.embed_dim = cfg.codebook_dim
        self.encoder = Encoder(cfg.ch, cfg.encoder_ch_mult, cfg.num_res_blocks, cfg.codebook_dim,
                               cfg.encoder_down_levels, cfg.in_channels)
        self.decoder = Decoder(cfg.ch, cfg.decoder_ch_mult, cfg.num_res_blocks, cfg.codebook_dim,
                               cfg.decoder_up_levels, cfg.in_channels)
        self.quantizer = MultiScaleBSQ(cfg.codebook_dim)
        self.quantize = self.quantizer

    def bits_to_codes(self, bits: torch.Tensor) -> torch.Tensor:
        """bits (B, 1, h, w, d) in {0, 1} -> codes (B, d, 1, h, w)."""
        return self.quantizer.lfq.bits_to_codes(bits)

    def codes_to_grid(self, codes: torch.Tensor, size: Tuple[int, int, int]) -> torch.Tensor:
        """Codes of one scale up (or down) to a (t, h, w) grid, as the sampler sums them."""
        return F.interpolate(codes, size=size, mode=INTERPOLATE_UP)

    def decode(self, summed_codes: torch.Tensor) -> torch.Tensor:
        """summed codes (B, d, H, W) -> image (B, 3, sH, sW) in [-1, 1], s = cfg.downsample (16; 8 for the patchify VAE)."""
        return torch.clamp(self.decoder(summed_codes), min=-1, max=1)

    def encode(self, image: torch.Tensor, schedule: Sequence[Tuple[int, int, int]]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """image (B, 3, H, W) in [-1, 1] -> (summed codes (B, d, H/16, W/16), bits per scale [(B, 1, h, w, d)])
        on the VAE's own schedule (for a patchify pair: twice the transformer's h and w)."""
        h = self.encoder(image).to(torch.float32)
        return self.quantizer(h, schedule)
