"""What nnhealth tells its user: a finding, and the warning category it is issued as."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "critical")


class TrainingHealthWarning(UserWarning):
    """Issued for every finding, so the ``warnings`` module can filter it,
    or turn it into an error (``warnings.simplefilter("error", TrainingHealthWarning)``)."""

    def __init__(self, message: str, finding: "Finding | None" = None):
        super().__init__(message)
        self.finding = finding


def _plain(value: Any) -> Any:
    """JSON-friendly numbers: numpy scalars to Python, non-finite floats kept as strings."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class Finding:
    """One diagnosis: which symptom, where, when, the numbers behind it, what to try."""

    symptom: str
    severity: str
    step: int
    where: str | None
    message: str
    evidence: dict = field(default_factory=dict)
    advice: str = ""

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def evidence_text(self) -> str:
        return ", ".join(f"{k}={_fmt(v)}" for k, v in self.evidence.items())

    def line(self) -> str:
        """One readable console line, naming the symptom id as a linter names its rule."""
        where = f" [{self.where}]" if self.where else ""
        evidence = f" ({self.evidence_text()})" if self.evidence else ""
        advice = f" -> {self.advice}" if self.advice else ""
        return f"nnhealth {self.severity} {self.symptom} at step {self.step}{where}: {self.message}{evidence}{advice}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["evidence"] = _plain(d["evidence"])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict) -> "Finding":
        """A finding read back (from findings.jsonl, which anyone may have written): checked, not trusted."""
        if not isinstance(d, dict):
            raise ValueError(f"a finding record is a JSON object, got {type(d).__name__}")
        missing = {"symptom", "severity", "step"} - set(d)
        if missing:
            raise ValueError(f"finding record lacks {sorted(missing)}")
        where = d.get("where")
        if not isinstance(d["symptom"], str) or not (where is None or isinstance(where, str)):
            raise ValueError("a finding's symptom and where are strings")
        step = d["step"]
        if isinstance(step, float) and step.is_integer():  # 12.0 from a writer without integers
            step = int(step)
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"a finding's step is a whole number, got {step!r}")
        return cls(symptom=d["symptom"], severity=str(d["severity"]), step=step,
                   where=where, message=str(d.get("message", "")),
                   evidence=dict(d.get("evidence") or {}), advice=str(d.get("advice", "")))
