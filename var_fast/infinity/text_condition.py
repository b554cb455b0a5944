"""``TextCondition``: prompt features as Infinity consumes them: the valid tokens of every prompt, one after
the other (upstream ``encode_prompt``'s ``kv_compact``), and each prompt's token count."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch
import torch.nn.functional as F


@dataclass
class TextCondition:
    features: torch.Tensor  # [sum(lens), C] float32
    lens: List[int]

    def __post_init__(self):
        self.lens = [int(n) for n in self.lens]
        if self.features.dim() != 2 or self.features.shape[0] != sum(self.lens):
            raise ValueError(f"features must be [sum(lens)={sum(self.lens)}, C], got {tuple(self.features.shape)}")
        if any(n < 1 for n in self.lens):
            raise ValueError(f"every prompt needs at least one token, got lens {self.lens}")

    @classmethod
    def from_padded(cls, features: torch.Tensor, mask: torch.Tensor) -> "TextCondition":
        """[B, L, C] features and their [B, L] attention mask (ones then zeros) -> the compact form."""
        lens = mask.sum(dim=-1).tolist()
        return cls(torch.cat([f[:n] for n, f in zip(lens, features.unbind(0))], dim=0), lens)

    @property
    def batch_size(self) -> int:
        return len(self.lens)

    @property
    def cu_seqlens(self) -> torch.Tensor:
        return F.pad(torch.tensor(self.lens, dtype=torch.int32).cumsum(0), (1, 0)).to(torch.int32)

    def cat(self, other: "TextCondition") -> "TextCondition":
        return TextCondition(torch.cat([self.features, other.features.to(self.features)]), self.lens + other.lens)

    def split(self) -> List["TextCondition"]:
        offsets = [0] + torch.tensor(self.lens).cumsum(0).tolist()
        return [TextCondition(self.features[a:b], [b - a]) for a, b in zip(offsets[:-1], offsets[1:])]

    def to(self, *args, **kwargs) -> "TextCondition":
        return TextCondition(self.features.to(*args, **kwargs), list(self.lens))

    @staticmethod
    def stack(parts: Sequence["TextCondition"]) -> "TextCondition":
        return TextCondition(torch.cat([p.features for p in parts]), [n for p in parts for n in p.lens])
