"""A small patch discriminator and the hinge losses of an adversarial decoder loss (VQGAN's recipe, which the
reference VQVAE was trained with, at the size of the bundled 64 px model).

The decoder stage of scripts/train_default_model.py (``--disc-weight``) uses it: the discriminator learns to tell
the training renders from the decoder's drawings of f_hat whose fine scales the VAR sampled, and the decoder
learns to draw what it cannot tell apart. Pixel losses ask a decoder for the mean of what a bent f_hat could
mean; a discriminator asks for something that looks like a render: straight edges, a render's colours.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchDiscriminator(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, 1, H/8, W/8) logits, one per overlapping patch of about 22 px: three
    stride-2 convolutions and a 3x3 head. No spectral norm: it bounds the logits by the pixel distance of
    real and fake, and a bent edge is a few pixels' difference (a spectrally normalised one stayed at the
    hinge's 2.0, telling nothing apart, for 550 steps of the bundled model's decoder stage)."""

    def __init__(self, ch: int = 32):
        super().__init__()
        widths = [3, ch, 2 * ch, 4 * ch]
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def discriminator_hinge_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: real patches pushed above +1, fake ones below -1."""
    return F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()


def generator_hinge_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The decoder's adversarial loss: raise the discriminator's logits of its drawings."""
    return -logits_fake.mean()
