"""The record a sink receives for each processed step."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..stats.summary import Summary


@dataclass
class StepRecord:
    step: int
    #: {(where, stat): value}; where is None for model-level values (loss, metrics)
    scalars: dict = field(default_factory=dict)
    #: {(role, where): Summary} on sampled steps
    summaries: dict[tuple[str, str], Summary] = field(default_factory=dict)
    #: {name: facts} (activation kind, ndim, fan-in) for the names in this record
    meta: dict = field(default_factory=dict)


class Sink:
    """Base class with do-nothing methods; subclasses override what they use."""

    def write_step(self, record: StepRecord) -> None:
        pass

    def write_finding(self, finding) -> None:
        pass

    def write_findings(self, findings: list) -> None:
        """All findings new at one step; sinks that group them override this."""
        for f in findings:
            self.write_finding(f)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
