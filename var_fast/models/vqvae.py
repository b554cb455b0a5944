"""The VAR VQVAE: encoder -> quant_conv -> multi-scale quantizer -> post_quant_conv -> decoder."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from .quantizer import MultiScaleQuantizer
from .vae_blocks import Decoder, Encoder


@dataclass(frozen=True)
class VQVAEConfig:
    vocab_size: int = 4096
    z_channels: int = 32
    ch: int = 160
    ch_mult: Tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    using_sa: bool = True
    using_mid_sa: bool = True
    quant_conv_ks: int = 3
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    default_qresi_counts: int = 0
    patch_nums: Tuple[int, ...] = field(default=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16))

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * self.downsample


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig = VQVAEConfig()):
        super().__init__()
        self.config = config
        self.V = self.vocab_size = config.vocab_size
        self.Cvae = config.z_channels
        blocks = dict(ch=config.ch, ch_mult=config.ch_mult, num_res_blocks=config.num_res_blocks,
                      z_channels=config.z_channels, using_sa=config.using_sa, using_mid_sa=config.using_mid_sa)
        self.encoder = Encoder(**blocks)
        self.decoder = Decoder(**blocks)
        self.quantize = MultiScaleQuantizer(config.vocab_size, config.z_channels, config.patch_nums,
                                            quant_resi=config.quant_resi, share_quant_resi=config.share_quant_resi,
                                            default_qresi_counts=config.default_qresi_counts)
        ks = config.quant_conv_ks
        self.quant_conv = nn.Conv2d(self.Cvae, self.Cvae, ks, stride=1, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(self.Cvae, self.Cvae, ks, stride=1, padding=ks // 2)

    @property
    def patch_nums(self) -> Tuple[int, ...]:
        return self.quantize.v_patch_nums

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """f_hat -> image in [-1, 1]."""
        return self.decoder(self.post_quant_conv(f_hat)).clamp_(-1, 1)

    def img_to_idx(self, img: torch.Tensor, patch_nums: Sequence[int] | None = None) -> List[torch.Tensor]:
        """Image in [-1, 1] -> per-scale token indices (B, pn*pn) (reference ``img_to_idxBl``)."""
        return self.quantize.f_to_idx(self.quant_conv(self.encoder(img)), patch_nums)

    def idx_to_img(self, idx_Bl: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-scale tokens -> image in [-1, 1] (reference ``idxBl_to_img(same_shape=True, last_one=True)``)."""
        return self.fhat_to_img(self.quantize.idx_to_fhat(idx_Bl))

    def load_state_dict(self, state_dict: Dict[str, Any], strict: bool = True, assign: bool = False):
        # The usage statistics have one row per scale of the patch layout the VAE was trained with;
        # like the reference, accept a file from a layout with a different number of scales.
        key = "quantize.ema_vocab_hit_SV"
        if key in state_dict and state_dict[key].shape[0] != self.quantize.ema_vocab_hit_SV.shape[0]:
            state_dict = dict(state_dict)
            state_dict[key] = torch.zeros(self.quantize.ema_vocab_hit_SV.shape)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
