"""nnhealth report LOGDIR: a static health report of a recorded run (HTML, or the figures as PNG)."""
from __future__ import annotations

import argparse
import sys

NAME = "report"
HELP = "write a self-contained HTML health report (or PNG figures) of a recorded run"
DESCRIPTION = """\
Reads a run's TensorBoard event files and findings.jsonl and writes one
self-contained HTML page (images embedded) with: the loss and accuracy
curves with each finding marked, the activation distributions of every
layer at a few steps, the update ratio over time against the healthy band,
dead and saturated units per layer, and the findings with what to try.

Runs written by other tools work too: the report shows what they have and
says what is missing.

examples:
  nnhealth report runs/exp1                      # -> report.html
  nnhealth report runs/exp1 -o exp1.html --steps 0 500 2000
  nnhealth report runs/exp1 --format png -o figures/
"""


def _steps(text: str) -> list[int]:
    try:
        out = [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"steps must be whole numbers, got {text!r}") from None
    if any(s < 0 for s in out):
        raise argparse.ArgumentTypeError(f"steps must be >= 0, got {text!r}")
    return out


def add_arguments(p):
    p.add_argument("logdir", metavar="LOGDIR", help="the run's log folder (Monitor(logdir=...)), or a folder "
                   "holding exactly one run; Keras' train/ and validation/ folders are one run")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="the HTML file to write (default: report.html), or with --format png the folder for "
                        "the figures (default: report/)")
    p.add_argument("--format", choices=("html", "png"), default="html",
                   help="html: one self-contained page (default); png: the figures alone, one file each")
    p.add_argument("--steps", metavar="STEP", nargs="+", type=_steps, default=None,
                   help="steps whose activation histograms to show (each moved to the nearest step that has "
                        "them; default: four spread over the run); '0 100 200' or '0,100,200'")


def run(args) -> int:
    from nnhealth.dashboards.report import write_html, write_pngs

    steps = [s for group in args.steps for s in group] if args.steps else None
    if args.format == "png":
        written, run_data, panels = write_pngs(args.logdir, args.output or "report", steps)
        for path in written:
            print(path)
    else:
        path, run_data, panels = write_html(args.logdir, args.output or "report.html", steps)
        print(path)
    for panel in panels:
        for note in panel.notes:
            print(f"nnhealth report: {panel.title}: {note}", file=sys.stderr)
    for problem in run_data.problems:
        print(f"nnhealth report: {problem}", file=sys.stderr)
    return 0
