"""The static health report: one self-contained HTML file, or the figures alone as PNG files.

The HTML embeds its images as base64 PNG and its style inline, so it can be
attached to a pull request or mailed; a Content-Security-Policy forbids any
script or outside resource, and every name and message is escaped, so a
layer called ``<script>`` is shown, not run. What a run lacks (another
tool's logs, a run without validation) is said where the figure would be.
"""
from __future__ import annotations

import base64
import html
import io
import time
from collections import Counter
from pathlib import Path

from .figures import SEVERITY_COLORS, Panel, all_panels
from .run_data import RunData, read_run

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1150px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.meta { color: #555; font-size: 0.9rem; } .caption { color: #444; font-size: 0.92rem; }
.note { background: #fff8e1; border-left: 4px solid #f5b400; padding: 0.4rem 0.8rem; margin: 0.5rem 0;
        font-size: 0.9rem; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; width: 100%; font-size: 0.88rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.5rem; vertical-align: top; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; white-space: nowrap; }
.sev { color: #fff; border-radius: 3px; padding: 0.05rem 0.4rem; font-size: 0.8rem; white-space: nowrap; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def png_bytes(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _findings_table(run: RunData) -> str:
    if not run.has_findings_file:
        return ('<p class="note">This run has no findings.jsonl, so there are no findings to show '
                "(it was not watched by nnhealth, or nnhealth wrote to another folder).</p>")
    if not run.findings:
        return "<p>No findings: nnhealth saw nothing wrong in this run.</p>"
    rows = []
    for i, f in enumerate(run.findings, 1):
        badge = f'<span class="sev" style="background:{SEVERITY_COLORS.get(f.severity, "#777")}">{esc(f.severity)}</span>'
        rows.append(
            f'<tr><td class="num">{i}</td><td class="num">{esc(f.step)}</td><td>{badge}</td>'
            f"<td><code>{esc(f.symptom)}</code></td><td>{esc(f.where or '-')}</td><td>{esc(f.message)}</td>"
            f"<td>{esc(f.evidence_text())}</td><td>{esc(f.advice)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("#", "step", "severity", "symptom", "where", "what", "evidence",
                                              "what to try"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _panel(panel: Panel) -> str:
    parts = [f'<section id="{esc(panel.key)}"><h2>{esc(panel.title)}</h2>']
    if panel.figure is not None:
        data = base64.b64encode(png_bytes(panel.figure)).decode("ascii")
        parts.append(f'<p class="caption">{esc(panel.caption)}</p>')
        parts.append(f'<img src="data:image/png;base64,{data}" alt="{esc(panel.title)}">')
    parts += [f'<p class="note">{esc(n)}</p>' for n in panel.notes]
    parts.append("</section>")
    return "\n".join(parts)


def _summary(run: RunData) -> str:
    counts = Counter(f.severity for f in run.findings)
    words = ", ".join(f"{counts[s]} {s}" for s in ("critical", "warning", "info") if counts[s])
    steps = run.steps
    facts = [f"log folder <code>{esc(run.path)}</code>"]
    if steps:
        facts.append(f"steps {steps[0]} to {steps[1]}")
    if run.run_info:
        every = run.run_info.get("every")
        if every:
            facts.append(f"layer statistics every {esc(every)} steps")
        if run.run_info.get("num_classes"):
            facts.append(f"{esc(run.run_info['num_classes'])} classes")
    else:
        facts.append("not written by nnhealth (no nnhealth/run description): showing what it has")
    verdict = f"{len(run.findings)} finding(s): {words}." if run.findings else ""
    return f'<p class="meta">{"; ".join(facts)}.</p><p><strong>{esc(verdict)}</strong></p>'


def render_html(run: RunData, panels: list[Panel]) -> str:
    """The report page for ``run``, with ``panels`` (see :func:`~.figures.all_panels`)."""
    loss, rest = panels[0], panels[1:]
    body = [f"<h1>nnhealth report: {esc(run.path.name or run.path)}</h1>", _summary(run), _panel(loss),
            '<section id="findings"><h2>Findings</h2>', _findings_table(run), "</section>"]
    body += [_panel(p) for p in rest]
    if run.problems:
        body.append('<section id="problems"><h2>Could not read</h2><ul>'
                    + "".join(f"<li>{esc(p)}</li>" for p in run.problems) + "</ul></section>")
    body.append(f'<p class="meta">Made by <code>nnhealth report</code> on {esc(time.strftime("%Y-%m-%d %H:%M"))}.</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>nnhealth report: {esc(run.path.name or run.path)}</title><style>{CSS}</style></head>\n"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_html(logdir, out, steps: list[int] | None = None) -> tuple[Path, RunData, list[Panel]]:
    run = read_run(logdir)
    panels = all_panels(run, steps)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(run, panels), encoding="utf-8")
    return out, run, panels


def write_pngs(logdir, folder, steps: list[int] | None = None) -> tuple[list[Path], RunData, list[Panel]]:
    """Each panel's figure as ``<folder>/<key>.png``; panels without data write nothing."""
    run = read_run(logdir)
    panels = all_panels(run, steps)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for p in panels:
        if p.figure is not None:
            path = folder / f"{p.key}.png"
            path.write_bytes(png_bytes(p.figure, dpi=120))
            written.append(path)
    return written, run, panels
