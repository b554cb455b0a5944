"""How a sample-fid job splits into batches: fixed ranges of image indices [k * batch_size, (k + 1) *
batch_size), dealt to the ranks round-robin, so any number of processes and any interruption give the same
batches (shared by FidJob, classes, and PromptJob, prompts)."""
from __future__ import annotations

from typing import List


class IndexBatches:
    """Mixin for a job with ``total`` images and a ``batch_size``."""

    total: int
    batch_size: int

    def batches(self) -> List[range]:
        return [range(s, min(s + self.batch_size, self.total)) for s in range(0, self.total, self.batch_size)]

    def batches_of_rank(self, rank: int, world: int) -> List[range]:
        return self.batches()[rank::world]
