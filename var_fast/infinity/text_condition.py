"""Text conditioning of Infinity: the T5 features of a batch of prompts, packed without padding
(what upstream's encode_prompt returns as (kv_compact, lens, cu_seqlens_k, Ltext))."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TextCondition:
    features: torch.Tensor   # (sum(lens), C) float32: prompt i's tokens are rows sum(lens[:i]) ..
    lens: List[int]          # tokens per prompt (each >= 1)

    def __post_init__(self):
        if not isinstance(self.features, torch.Tensor) or self.features.ndim != 2:
            raise ValueError(f"TextCondition.features must be a 2-D tensor (sum(lens), channels), got "
                             f"{getattr(self.features, 'shape', type(self.features))}")
        lens = [int(n) for n in self.lens]
        object.__setattr__(self, "lens", lens)
        if not lens:
            raise ValueError("TextCondition needs at least one prompt (lens is empty)")
        if any(n < 1 for n in lens):
            raise ValueError(f"TextCondition: every prompt needs at least one token, got lens={lens}")
        if sum(lens) != self.features.shape[0]:
            raise ValueError(f"TextCondition: lens sum to {sum(lens)} but features has {self.features.shape[0]} rows")

    @classmethod
    def from_padded(cls, features: torch.Tensor, mask: torch.Tensor) -> "TextCondition":
        """features (B, L, C) and attention mask (B, L) (1 = token; the tokens of a row come first, as
        the tokenizer pads on the right) -> packed, float32."""
        if features.ndim != 3 or mask.shape != features.shape[:2]:
            raise ValueError(f"from_padded: features (B, L, C) and mask (B, L) expected, got "
                             f"{tuple(features.shape)} and {tuple(mask.shape)}")
        lens = mask.sum(dim=-1).tolist()
        rows = [f[:int(n)] for n, f in zip(lens, features.float().unbind(0))]
        return cls(torch.cat(rows, dim=0), [int(n) for n in lens])

    @property
    def batch_size(self) -> int:
        return len(self.lens)

    @property
    def channels(self) -> int:
        return self.features.shape[1]

    @property
    def max_len(self) -> int:
        return max(self.lens)

    @property
    def cu_seqlens(self) -> torch.Tensor:
        """(B + 1,) int32 offsets of each prompt's rows (upstream's cu_seqlens_k)."""
        return F.pad(torch.tensor(self.lens, dtype=torch.int32).cumsum(0, dtype=torch.int32), (1, 0))

    def cat(self, other: "TextCondition") -> "TextCondition":
        if other.channels != self.channels:
            raise ValueError(f"cannot concatenate text conditions of {self.channels} and {other.channels} channels")
        return TextCondition(torch.cat((self.features, other.features.to(self.features)), 0), self.lens + other.lens)

    def select(self, indices: Sequence[int]) -> "TextCondition":
        """The prompts at ``indices`` (in that order)."""
        starts = [0]
        for n in self.lens:
            starts.append(starts[-1] + n)
        rows = [self.features[starts[i]:starts[i + 1]] for i in indices]
        return TextCondition(torch.cat(rows, 0), [self.lens[i] for i in indices])

    def to(self, *args, **kwargs) -> "TextCondition":
        return TextCondition(self.features.to(*args, **kwargs), self.lens)

    def as_upstream(self):
        """(kv_compact, lens, cu_seqlens_k, Ltext) as upstream's encode_prompt returns it."""
        return self.features, list(self.lens), self.cu_seqlens, self.max_len
