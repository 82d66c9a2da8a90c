"""What a sanity check tells its user: pass, fail or skip, the numbers measured, and what to try."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

STATUSES = ("pass", "fail", "skip")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check of the lecture's checklist.

    ``measured`` holds the numbers the verdict rests on, so a test or a script can
    assert on them; ``advice`` says what to try when the check fails (empty on a pass).
    """

    check: str                  # stable id: initial-loss, gradient-flow, overfit-small-subset, input-dependence
    status: str                 # pass | fail | skip
    message: str                # one line: what was measured against what was expected
    measured: dict = field(default_factory=dict)
    advice: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def line(self) -> str:
        return f"{self.status.upper():4} {self.check}: {self.message}"

    def __str__(self) -> str:
        text = self.line()
        if self.measured:
            text += "\n       " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.measured.items())
        if self.advice:
            text += f"\n    -> {self.advice}"
        return text


@dataclass(frozen=True)
class Checklist:
    """The results of :func:`nnhealth.sanity.run_all`, in the lecture's order."""

    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """True when no check failed and at least one passed (skips neither pass nor fail)."""
        return not self.failed and any(r.passed for r in self.results)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.failed]

    def __getitem__(self, check: str) -> CheckResult:
        for r in self.results:
            if r.check == check:
                return r
        raise KeyError(f"no check {check!r}; ran: {', '.join(r.check for r in self.results)}")

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __str__(self) -> str:
        counts = {s: sum(r.status == s for r in self.results) for s in STATUSES}
        head = (f"nnhealth sanity checklist: {counts['pass']} passed, {counts['fail']} failed"
                + (f", {counts['skip']} skipped" if counts["skip"] else ""))
        lines = [head]
        for r in self.results:
            lines.append(r.line())
            if r.advice and not r.passed:
                lines.append(f"    -> {r.advice}")
        return "\n".join(lines)
