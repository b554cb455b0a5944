"""A small patch discriminator and the hinge losses of an adversarial decoder loss (VQGAN's recipe, which the
reference VQVAE was trained with, at the size of the bundled 64 px model).

The decoder stage of scripts/train_default_model.py (``--disc-weight``) uses it: the discriminator learns to tell
the training renders from the decoder's drawings of f_hat whose fine scales the VAR sampled, and the decoder
learns to draw what it cannot tell apart. Pixel losses ask a decoder for the mean of what a bent f_hat could
mean; a discriminator asks for something that looks like a render: straight edges, a render's colours.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchDiscriminator(nn.Module):
    """(B, 3, H, W) in [-1, 1] [, (B,) class labels] -> (B, 1, H / 2^layers, W / 2^layers) logits, one per
    overlapping patch: ``layers`` stride-2 convolutions and a 3x3 head. Three layers see patches of 38 px (of a
    64 px image), four the whole image (78 px), enough to tell a bent arm of a cross from a straight one.

    With ``num_classes`` it is a projection discriminator (Miyato and Koyama, "cGANs with projection
    discriminator", ICLR 2018): a learnt class embedding dotted with the last features is added to every patch's
    logit, so it judges a drawing as a render *of its class* (a wavy edge passes for a heart's, not a cross's).

    No spectral norm: it bounds the logits by the pixel distance of real and fake, and a bent edge is a few
    pixels' difference (a spectrally normalised one stayed at the hinge's 2.0, telling nothing apart, for 550
    steps of the bundled model's decoder stage)."""

    def __init__(self, ch: int = 32, layers: int = 3, num_classes: int = 0):
        super().__init__()
        if layers < 1:
            raise ValueError(f"a patch discriminator needs at least one stride-2 layer, got {layers}")
        widths = [3] + [ch * 2 ** min(i, 2) for i in range(layers)]  # ch, 2ch, 4ch, 4ch, ...
        convs = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            convs += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        convs.append(nn.Conv2d(widths[-1], 1, 3, padding=1))
        self.net = nn.Sequential(*convs)  # one Sequential, so three-layer states saved before keep their keys
        self.class_embed = nn.Embedding(num_classes, widths[-1]) if num_classes else None
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.class_embed is None:  # unconditional: the labels, if given, do not matter
            return self.net(x)
        if labels is None or labels.shape != (x.shape[0],):
            raise ValueError(f"a class-conditional discriminator needs one label per image ({x.shape[0]}), "
                             f"got {None if labels is None else tuple(labels.shape)}")
        h = self.net[:-1](x)
        projection = (self.class_embed(labels)[:, :, None, None] * h).sum(dim=1, keepdim=True)
        return self.net[-1](h) + projection


def discriminator_hinge_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: real patches pushed above +1, fake ones below -1."""
    return F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()


def generator_hinge_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The decoder's adversarial loss: raise the discriminator's logits of its drawings."""
    return -logits_fake.mean()
