"""The benchmark's printed report: one row per case (its seeds together), then the summary.

Columns: the case, its framework, the symptoms that count as detecting its
fault, every symptom reported (with the share of seeds when not all), the
step of the first expected finding on each seed over the planned steps, the
false alarms (warning level and above, summed over seeds), and how many
seeds passed the independent check (fault real, or healthy run learned).
"""
from __future__ import annotations

import textwrap
from collections import Counter

from benchmarks.detection_score import INIT_DEADLINE, Score, Summary

#: (title, width); cells wrap at commas to stay inside their column
COLUMNS = (("case", 28), ("fw", 5), ("expected", 28), ("found (all seeds)", 40), ("first found / steps", 19),
           ("false alarms", 22), ("check", 5))


def _items(counts: Counter, seeds: int) -> str:
    """``symptom`` when on every seed, ``symptom (k/n)`` otherwise."""
    return ", ".join(k if n == seeds else f"{k} ({n}/{seeds})" for k, n in counts.items())


def _row(scores: list[Score]) -> list[str]:
    c = scores[0].result.case
    n = len(scores)
    found = Counter()
    for sc in scores:
        for symptom in sc.found:
            found[symptom] += 1
    alarms = Counter(f.symptom for sc in scores for f in sc.false_alarms)
    if c.healthy:
        first = "-"
    else:
        first = ",".join("miss" if sc.first is None else str(sc.first) for sc in scores) + f" / {c.steps}"
    return [c.name, c.framework, ", ".join(c.expected) or "(healthy)", _items(found, n) or "-", first,
            f"{sum(alarms.values())}" + (f": {', '.join(alarms)}" if alarms else ""),
            f"{sum(sc.result.proof.ok for sc in scores)}/{n}"]


def _lines(cells: list[str]) -> list[str]:
    wrapped = [textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]
               for text, (_, width) in zip(cells, COLUMNS)]
    height = max(len(w) for w in wrapped)
    return ["  ".join(f"{(w[i] if i < len(w) else ''):{width}}" for w, (_, width) in zip(wrapped, COLUMNS)).rstrip()
            for i in range(height)]


def table(scores: list[Score]) -> str:
    by_case: dict[str, list[Score]] = {}
    for sc in scores:
        by_case.setdefault(sc.result.case.name, []).append(sc)
    out = _lines([title for title, _ in COLUMNS])
    out.append("  ".join("-" * width for _, width in COLUMNS))
    for group in by_case.values():
        out += _lines(_row(sorted(group, key=lambda sc: sc.result.seed)))
    return "\n".join(out)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def summary(s: Summary, seeds: list[int], wall: float) -> str:
    lines = [
        f"fault runs detected with an expected symptom: {s.detected}/{s.fault_runs} "
        f"(recall {_pct(s.recall)})" + (f"; missed: {'; '.join(s.missed)}" if s.missed else ""),
        f"healthy runs with a warning-level finding: {s.noisy_healthy}/{s.healthy_runs} "
        f"(false-alarm rate {_pct(s.false_alarm_rate)})" + (f"; {'; '.join(s.noisy)}" if s.noisy else ""),
        f"median detection delay: {s.median_delay:.3f} of the run (first expected finding / planned steps)",
        f"initialisation faults found within the first {_pct(INIT_DEADLINE)} of the run: {s.init_in_time}/{s.init_runs}"
        + (f"; late: {'; '.join(s.late)}" if s.late else ""),
        f"unexplained warning-level findings on fault runs: {s.fault_alarms}",
        f"fault real / healthy run learned (independent check): {s.proofs}/{s.runs}"
        + (f"; not: {'; '.join(s.unproven)}" if s.unproven else ""),
        f"symptoms found where expected: {len(s.covered)}/{len(s.covered) + len(s.uncovered)}"
        + (f"; never: {', '.join(s.uncovered)}" if s.uncovered else ""),
        f"targets (every fault found on every seed, no false alarm, init faults within "
        f"{_pct(INIT_DEADLINE)}, every fault real): {'met' if s.targets_met else 'NOT met'}",
        f"{s.runs} runs, seeds {' '.join(map(str, seeds))}: {s.seconds:.0f} s of training, {wall:.0f} s wall clock",
    ]
    return "\n".join(lines)
