"""A sample-fid job over a prompt list (Infinity): N = len(prompts) * per_prompt images, image i of prompt
prompts[i // per_prompt] written to ``DIR/{i:06d}.png``, its random stream keyed by (seed, i)
(``var_fast.infinity.sampler.image_seed``), batches of fixed index ranges dealt to the ranks round-robin as
FidJob's: any number of processes and any interruption give the same files."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch

from .batches import IndexBatches


@dataclass(frozen=True)
class PromptJob(IndexBatches):
    prompts: Tuple[str, ...]
    per_prompt: int
    batch_size: int
    seed: int
    sampling: dict  # InfinitySampler.sample_batches' keyword arguments besides seed and batch_size

    def __post_init__(self):
        if not self.prompts:
            raise ValueError("the prompt list is empty")
        for name in ("per_prompt", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")

    @property
    def total(self) -> int:
        return len(self.prompts) * self.per_prompt

    def prompt(self, index: int) -> str:
        return self.prompts[index // self.per_prompt]

    def pixels(self, sampler, indices: range) -> np.ndarray:
        """Images ``indices`` as (B, H, W, 3) uint8: one pass of the batch, images keyed by (seed, index)."""
        images = sampler.sample([self.prompt(i) for i in indices], seed=self.seed, image_offset=indices.start,
                                batch_size=len(indices), **self.sampling)
        pixels = images.clamp(0, 1).mul(255).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()
