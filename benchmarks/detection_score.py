"""What counts in the detection benchmark: a detection, a false alarm, a delay, and their totals.

- A fault run is **detected** when a finding of one of the case's expected
  symptoms was reported (any severity: ``underfitting`` is info-level by
  design); its **delay** is the step of the first such finding divided by
  the steps the run was planned for.
- A **false alarm** is a warning- or critical-level finding on a healthy run;
  on a fault run, one whose symptom is neither expected nor among the
  consequences the case lists in ``also`` (a too-high learning rate also
  kills ReLUs; those findings are true, not false alarms).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from benchmarks.cases import Result
from nnhealth import SYMPTOMS, Finding

#: severities that interrupt a user (console warnings); info goes to files and the summary only
LOUD = ("warning", "critical")
#: initialisation faults must be found within this fraction of the run
INIT_DEADLINE = 0.1


@dataclass(frozen=True)
class Score:
    result: Result
    detected: bool | None                # None on a healthy run
    first: int | None                    # step of the first expected finding
    found: tuple[str, ...]               # every symptom reported, in order of first appearance
    false_alarms: tuple[Finding, ...]

    @property
    def delay(self) -> float | None:
        return None if self.first is None else self.first / self.result.case.steps


def score(result: Result) -> Score:
    c = result.case
    found = tuple(dict.fromkeys(f.symptom for f in result.findings))
    hits = [f.step for f in result.findings if f.symptom in c.expected]
    explained = set(c.expected) | set(c.also)
    alarms = tuple(f for f in result.findings if f.severity in LOUD and f.symptom not in explained)
    return Score(result=result, detected=None if c.healthy else bool(hits), first=min(hits, default=None),
                 found=found, false_alarms=alarms)


@dataclass
class Summary:
    fault_runs: int = 0
    detected: int = 0
    healthy_runs: int = 0
    noisy_healthy: int = 0               # healthy runs with at least one false alarm
    fault_alarms: int = 0                # unexplained loud findings on fault runs
    delays: list[float] = field(default_factory=list)
    init_runs: int = 0
    init_in_time: int = 0
    proofs: int = 0
    runs: int = 0
    seconds: float = 0.0
    missed: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    noisy: list[str] = field(default_factory=list)
    unproven: list[str] = field(default_factory=list)
    #: symptom -> cases in which it was found while expected
    covered: dict[str, list[str]] = field(default_factory=dict)
    #: symptom -> cases that expect it
    expected_in: dict[str, list[str]] = field(default_factory=dict)

    @property
    def recall(self) -> float:
        return self.detected / self.fault_runs if self.fault_runs else float("nan")

    @property
    def false_alarm_rate(self) -> float:
        return self.noisy_healthy / self.healthy_runs if self.healthy_runs else float("nan")

    @property
    def median_delay(self) -> float:
        return statistics.median(self.delays) if self.delays else float("nan")

    @property
    def uncovered(self) -> list[str]:
        return [s for s in SYMPTOMS if s not in self.covered]

    @property
    def targets_met(self) -> bool:
        return (self.detected == self.fault_runs and self.noisy_healthy == 0 and self.init_in_time == self.init_runs
                and self.proofs == self.runs)


def summarize(scores: list[Score]) -> Summary:
    s = Summary()
    for sc in scores:
        r, c = sc.result, sc.result.case
        label = f"{c.name} seed {r.seed}"
        s.runs += 1
        s.seconds += r.seconds
        s.proofs += r.proof.ok
        if not r.proof.ok:
            s.unproven.append(f"{label}: {r.proof.detail}")
        for symptom in c.expected:
            s.expected_in.setdefault(symptom, [])
            if c.name not in s.expected_in[symptom]:
                s.expected_in[symptom].append(c.name)
        if c.healthy:
            s.healthy_runs += 1
            if sc.false_alarms:
                s.noisy_healthy += 1
                s.noisy.append(f"{label}: " + ", ".join(f"{f.symptom}@{f.step}" for f in sc.false_alarms))
            continue
        s.fault_runs += 1
        s.fault_alarms += len(sc.false_alarms)
        if not sc.detected:
            s.missed.append(label)
        else:
            s.detected += 1
            s.delays.append(sc.delay)
            for symptom in dict.fromkeys(f.symptom for f in r.findings if f.symptom in c.expected):
                s.covered.setdefault(symptom, [])
                if c.name not in s.covered[symptom]:
                    s.covered[symptom].append(c.name)
        if c.init:
            s.init_runs += 1
            if sc.detected and sc.delay <= INIT_DEADLINE:
                s.init_in_time += 1
            else:
                s.late.append(f"{label}: first at step {sc.first} of {c.steps}")
    return s
