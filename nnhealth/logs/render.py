"""What ``nnhealth check`` prints: one report per run, as a table for people or JSON for machines."""
from __future__ import annotations

import shutil
import textwrap

from ..finding import SEVERITIES, Finding
from .replay import Replay

HEAD = ("severity", "symptom", "where", "first step", "evidence", "advice")


def run_report(replay: Replay) -> dict:
    """Everything known about one run, JSON-ready: what was read, what was found, what went wrong."""
    log, plan = replay.log, replay.plan
    findings = [dict(f.to_dict(), source="replay", epoch=replay.epoch_of(f.step)) for f in replay.findings]
    findings += [dict(f.to_dict(), source="recorded", epoch=None) for f in replay.recorded_shown()]
    return {
        "run": log.name,
        "path": str(log.spec.path.resolve()),
        "nnhealth": log.is_nnhealth,
        "signals": dict(plan.mapping.signals) if plan else {},
        "axis": "epoch" if plan and plan.mapping.epoch_axis else "step",
        "preset": plan.preset if plan else None,
        "steps": replay.steps,
        "layer_steps": log.state_steps,
        "findings": findings,
        "problems": replay.problems(),
        "notes": replay.notes(),
    }


def worst(reports: list[dict]) -> str | None:
    """The most severe finding's severity over all runs (None when there is none)."""
    ranks = [SEVERITIES.index(f["severity"]) for r in reports for f in r["findings"]]
    return SEVERITIES[max(ranks)] if ranks else None


def finding_line(report: dict, finding: dict) -> str:
    """One line per finding, for ``--follow``: the run's name, then the finding as the console prints it."""
    keys = ("symptom", "severity", "step", "where", "message", "evidence", "advice")
    line = Finding.from_dict({k: finding[k] for k in keys}).line()
    if finding.get("source") == "recorded":
        line += " (recorded)"
    return f"{report['run']}: {line}"


def _when(report: dict, finding: dict) -> str:
    if report["axis"] == "epoch":
        return f"epoch {finding['step']}"
    epoch = finding.get("epoch")
    return f"{finding['step']} (epoch {epoch})" if epoch is not None else str(finding["step"])


def _evidence(evidence: dict) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in evidence.items())


def _rows(report: dict) -> list[tuple[str, ...]]:
    groups: dict[tuple, list[dict]] = {}
    for f in report["findings"]:
        groups.setdefault((f["symptom"], f["where"], f["source"]), []).append(f)
    rows, advised = [], set()
    for (symptom, where, source), fs in sorted(groups.items(), key=lambda kv: kv[1][0]["step"]):
        first = fs[0]
        when = _when(report, first) + (f", {len(fs)} times" if len(fs) > 1 else "")
        if source == "recorded":
            when += " (recorded)"
        advice = "(as above)" if symptom in advised else first["advice"] or first["message"]
        advised.add(symptom)
        rows.append((first["severity"], symptom, where or "-", when, _evidence(first["evidence"]), advice))
    return rows


def _table(rows: list[tuple[str, ...]], width: int, indent: str = "  ") -> list[str]:
    fixed = [min(40, max(len(r[i]) for r in rows + [HEAD])) for i in range(4)]
    free = max(40, width - len(indent) - sum(fixed) - 2 * (len(HEAD) - 1))
    longest_item = max(len(item) for r in rows for item in r[4].split())  # never split "name=value"
    evidence = max(18, longest_item, min(max(len(r[4]) for r in rows + [HEAD]), int(free * 0.4)))
    widths = fixed + [evidence, max(22, free - evidence)]
    out = []
    for row in [HEAD] + rows:
        cells = [textwrap.wrap(c, w, break_on_hyphens=False, break_long_words=i != 4) or [""]
                 for i, (c, w) in enumerate(zip(row, widths))]
        for k in range(max(len(c) for c in cells)):
            parts = [(c[k] if k < len(c) else "").ljust(w) for c, w in zip(cells, widths)]
            out.append((indent + "  ".join(parts)).rstrip())
    return out


def _read_line(report: dict) -> str:
    signals = ", ".join(f"{s}={t}" for s, t in report["signals"].items())
    what = f"{report['steps']} {'epochs' if report['axis'] == 'epoch' else 'steps'} replayed"
    if report["layer_steps"]:
        what += f", {report['layer_steps']} with layer statistics"
    if report["preset"]:
        what += f", {report['preset'].replace('step', 'per-step').replace('epoch', 'per-epoch')} thresholds"
    kind = "nnhealth run; " if report["nnhealth"] else ""
    return f"{kind}read {signals or 'no curves'}; {what}"


def table(reports: list[dict], fail_on: str, width: int | None = None) -> str:
    """The readable report: per run a line saying what was read, the findings, notes and problems."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    out = []
    for r in reports:
        out.append(r["run"])
        out.extend(textwrap.wrap(_read_line(r), width, initial_indent="  ", subsequent_indent="    ",
                                 break_on_hyphens=False))
        rows = _rows(r)
        out.extend(_table(rows, width) if rows else ["  no findings"])
        for note in r["notes"]:
            out.extend(textwrap.wrap(f"note: {note}", width, initial_indent="  ", subsequent_indent="    "))
        for problem in r["problems"]:
            out.extend(textwrap.wrap(f"problem: {problem}", width, initial_indent="  ", subsequent_indent="    ",
                                     break_on_hyphens=False))
        out.append("")
    out.append(summary_line(reports, fail_on))
    return "\n".join(out)


def summary_line(reports: list[dict], fail_on: str) -> str:
    counts = {s: 0 for s in reversed(SEVERITIES)}
    for r in reports:
        for f in r["findings"]:
            counts[f["severity"]] += 1
    total = sum(counts.values())
    limit = SEVERITIES.index(fail_on)
    failing = sum(any(SEVERITIES.index(f["severity"]) >= limit for f in r["findings"]) for r in reports)
    problems = sum(len(r["problems"]) for r in reports)
    detail = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    parts = [f"{len(reports)} run{'s' * (len(reports) != 1)} checked",
             f"{total} finding{'s' * (total != 1)}" + (f" ({detail})" if detail else ""),
             f"{failing} run{'s' * (failing != 1)} with findings at or above {fail_on}"]
    if problems:
        parts.append(f"{problems} problem{'s' * (problems != 1)} reading the logs")
    return "nnhealth check: " + "; ".join(parts)
