"""The record every stage leaves for the report."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

PASSED, FAILED, TIMEOUT, SKIPPED = "passed", "failed", "out of time", "skipped"


@dataclass
class StageResult:
    name: str
    status: str
    seconds: float = 0.0
    budget_s: Optional[float] = None
    detail: str = ""                       # one line for the stage table
    command: str = ""
    log: str = ""                          # file name in OUT
    data: Dict[str, Any] = field(default_factory=dict)
    output_tail: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)
