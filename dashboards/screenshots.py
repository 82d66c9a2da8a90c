"""The README's screenshots, made with the project's own pieces from scratch.

    python -m nnhealth.dashboards.screenshots [--out docs/img] [--logdir DIR]

Runs ``nnhealth demo`` twice (a healthy run and the lecture's "weights too
small" fault), starts ``tensorboard`` on the log folder and photographs its
Custom Scalars page with headless Chromium, then runs ``nnhealth report`` on
the faulty run and photographs the page.
Needs Chromium (Debian: ``apt-get install chromium``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .browser import TensorBoardServer, find_chromium, screenshot

RUNS = {"healthy": "none", "small-init": "small-init"}
REPORTED = "small-init"


def record_demo_runs(logdir: Path) -> None:
    """``nnhealth demo --fault F --logdir runs/<name>`` for each run."""
    from nnhealth.cli import main

    for run, fault in RUNS.items():
        if main(["demo", "--fault", fault, "--logdir", str(logdir / run)]) != 0:
            raise RuntimeError(f"nnhealth demo --fault {fault} failed")


def dashboard_screenshot(logdir: Path, out: Path) -> Path:
    with TensorBoardServer(logdir) as tb:
        tb.wait_for(lambda s: all("loss/train" in s.get("/data/plugin/scalars/tags").get(run, {}) for run in RUNS))
        return screenshot(f"{tb.url}/#custom_scalars", out, size=(1700, 1130), wait_ms=20000)


def report_screenshot(logdir: Path, out: Path, work: Path) -> Path:
    from nnhealth.cli import main

    page = work / "report.html"
    if main(["report", str(logdir / REPORTED), "-o", str(page)]) != 0:
        raise RuntimeError("nnhealth report failed")
    return screenshot(page.as_uri(), out, size=(1200, 2300), wait_ms=2000)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/img", help="folder for the PNG files (default: docs/img)")
    parser.add_argument("--logdir", help="where to write the demo runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print("chromium is not installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 1
    out = Path(args.out).resolve()
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="nnhealth-screenshots-") as tmp:
        logdir = Path(args.logdir).resolve() if args.logdir else Path("runs")
        os.chdir(tmp)  # so the pictures show the short path "runs", as a user's own would
        try:
            record_demo_runs(logdir)
            print(dashboard_screenshot(logdir, out / "tensorboard-dashboard.png"))
            print(report_screenshot(logdir, out / "report.png", Path(tmp)))
        finally:
            os.chdir(here)
    return 0


if __name__ == "__main__":
    sys.exit(main())
