"""Zero-shot editing in the reference loop: the semantics of ``autoregressive_infer_cfg_with_mask`` and
``replace_embedding`` in upstream's demo_zero_shot_edit.ipynb.

Every position of every scale is sampled as usual (so the random stream is the one of plain sampling);
then, before f_hat is updated, the positions to keep take the input image's token and code embedding.
The CFG-doubled batch is not involved: the replacement acts on the B mixed rows, and the next scale's
input is built from the edited f_hat for both halves.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..models.var import VAR
from ..models.vqvae import VQVAE
from .autoregressive import autoregressive_infer_cfg

# the notebook keeps a scale entirely when it has at most this many tokens (pn * pn <= 3: the 1x1 scale)
MAX_TOKENS_ALWAYS_KEPT = 3


def scale_keep_masks(token_mask: torch.Tensor, patch_nums: Sequence[int]) -> List[torch.Tensor]:
    """(B, h, w) keep mask in [0, 1] -> one (B, pn*pn) bool mask per scale.

    As the notebook: bilinear resize (align_corners=False) of the mask to each scale, then > 0.5; the
    last scale is resized too (a no-op at the same size, so a soft mask is thresholded there as well).
    """
    B = token_mask.shape[0]
    mask = token_mask.unsqueeze(1).float()
    out = []
    for pn in patch_nums:
        keep = F.interpolate(mask, size=(pn, pn), mode="bilinear", align_corners=False).gt(0.5)
        if pn * pn <= MAX_TOKENS_ALWAYS_KEPT:
            keep.fill_(True)
        out.append(keep.reshape(B, pn * pn))
    return out


class TeacherForcing:
    """The sampling loops' per-scale hook: kept positions take the input image's token and embedding."""

    def __init__(self, input_tokens: Sequence[torch.Tensor], keep: Sequence[torch.Tensor], codebook: torch.Tensor):
        self.input_tokens, self.keep, self.codebook = list(input_tokens), list(keep), codebook

    def rows(self, start: int, stop: int) -> "TeacherForcing":
        """The same forcing for images start..stop-1 of the batch."""
        return TeacherForcing([t[start:stop] for t in self.input_tokens], [k[start:stop] for k in self.keep],
                              self.codebook)

    def __call__(self, si: int, idx_Bl: torch.Tensor,
                 h_BChw: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        keep, given = self.keep[si], self.input_tokens[si]
        idx_Bl = torch.where(keep, given, idx_Bl)
        if h_BChw is not None:
            B, C, ph, pw = h_BChw.shape
            given_BChw = F.embedding(given, self.codebook).transpose(1, 2).reshape(B, C, ph, pw)
            h_BChw = torch.where(keep.view(B, 1, ph, pw), given_BChw.to(h_BChw.dtype), h_BChw)
        return idx_Bl, h_BChw


@torch.no_grad()
def autoregressive_infer_cfg_with_mask(var: VAR, vae: VQVAE, label_B: torch.Tensor, rng: Optional[torch.Generator],
                                       input_tokens: Sequence[torch.Tensor], token_mask: torch.Tensor,
                                       cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
                                       more_smooth: bool = False,
                                       on_scale: Optional[Callable[[int, int], None]] = None,
                                       ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """(f_hat, per-scale tokens) of the notebook's function given the input's tokens and a (B, h, w) keep
    mask on the last scale's grid. The returned tokens are the ones f_hat was built from: the input's
    where kept, the drawn ones elsewhere."""
    forcing = TeacherForcing(input_tokens, scale_keep_masks(token_mask, var.patch_nums), vae.quantize.embedding.weight)
    return autoregressive_infer_cfg(var, vae, label_B, rng, cfg=cfg, top_k=top_k, top_p=top_p,
                                    more_smooth=more_smooth, on_scale=on_scale, teacher_force=forcing)
