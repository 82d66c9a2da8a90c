"""The findings of a run as a markdown table, for TensorBoard's Text tab.

Cells are escaped twice over: HTML-special characters become entities (a
layer may be called anything) and the table's own syntax (``|``, line breaks)
and markdown's emphasis and code marks are neutralised, so one odd name cannot break the table or inject markup.
"""
from __future__ import annotations

import html

COLUMNS = ("step", "severity", "symptom", "where", "evidence", "advice")


def cell(value) -> str:
    text = "" if value is None else str(value)
    text = html.escape(text, quote=False)
    for char in "\\|*`":  # escapes, cell ends, emphasis and code would change the table
        text = text.replace(char, f"&#{ord(char)};")
    return " ".join(text.split())  # newlines and runs of spaces would end the row


def findings_table(findings) -> str:
    """Markdown table, one row per finding, oldest first.

    >>> from nnhealth import Finding
    >>> print(findings_table([Finding("dead-relu", "warning", 40, "fc|1", "dead", {"dead_fraction": 0.9},
    ...                               "lower the learning rate")]))
    | step | severity | symptom | where | evidence | advice |
    | ---: | --- | --- | --- | --- | --- |
    | 40 | warning | dead-relu | fc&#124;1 | dead: dead_fraction=0.9 | lower the learning rate |
    """
    if not findings:
        return "No findings."
    lines = ["| " + " | ".join(COLUMNS) + " |", "| ---: | " + " | ".join("---" for _ in COLUMNS[1:]) + " |"]
    for f in findings:
        evidence = f"{f.message}: {f.evidence_text()}" if f.evidence else f.message
        row = (f.step, f.severity, f.symptom, f.where or "-", evidence, f.advice)
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)
