"""nnhealth check LOGDIR...: diagnose finished or running trainings from their TensorBoard logs."""
from __future__ import annotations

import json
import os
import sys
import time

from ..config import parse_value, resolve_thresholds
from ..finding import SEVERITIES
from ..logs import presets
from ..logs.render import finding_line, table, worst
from ..logs.session import Session
from ..logs.tags import TABLE, parse_override

NAME = "check"
HELP = "diagnose finished or running trainings from their TensorBoard logs (any tool's)"
DESCRIPTION = """\
Reads the TensorBoard logs under each LOGDIR (every folder holding event files is a run, as in
TensorBoard; Keras' train/ and validation/ folders are one run), maps the usual tag names of
PyTorch, Keras, Lightning, Hugging Face and nnhealth to the curves the rules read, and replays each
run through the rules: loss and generalisation rules for any tool's logs, every rule for nnhealth's
own runs (their layer statistics are recorded), with the thresholds given now.

exit status: 0 no finding at or above --fail-on; 1 some; 2 usage error or nothing to check.

examples:
  nnhealth check runs/                          every run under runs/
  nnhealth check logs/fit --tag loss=my/loss    a tag the table does not know
  nnhealth check runs/exp1 --set dead-relu.max_dead_fraction=0.7
  nnhealth check runs/exp1 --follow             print findings as a running training writes its logs
"""


def add_arguments(p):
    p.add_argument("logdirs", nargs="+", metavar="LOGDIR", help="a folder of TensorBoard logs (one run or many)")
    p.add_argument("--tag", action="append", default=[], metavar="SIGNAL=TAG",
                   help=f"read SIGNAL ({', '.join(TABLE)}) from TAG instead of the tag table; repeatable")
    p.add_argument("--set", action="append", default=[], dest="thresholds", metavar="RULE.NAME=VALUE",
                   help="override a threshold, e.g. dead-relu.max_dead_fraction=0.7 (see 'nnhealth rules'); "
                        "repeatable")
    p.add_argument("--num-classes", type=int, metavar="C",
                   help="number of classes: enables the initial-loss check (nnhealth runs record it)")
    p.add_argument("--preset", choices=("auto", *presets.PRESETS), default="auto",
                   help="thresholds for curves logged per step or per epoch (default: auto, from the tags and "
                        "the number of points)")
    p.add_argument("--fail-on", choices=SEVERITIES, default="warning",
                   help="exit with status 1 when a finding is at least this severe (default: warning)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: a list of runs with their findings, problems and notes (with --follow: "
                        "one JSON object per line)")
    p.add_argument("--follow", action="store_true",
                   help="keep reading runs that are still being written; print findings as they appear "
                        "(stop with Ctrl-C or --timeout)")
    p.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                   help="with --follow: seconds between two reads (default: 5)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="with --follow: stop after this long")


def _options(args) -> dict:
    overrides = {}
    for text in args.thresholds:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {text!r}: expected RULE.NAME=VALUE, e.g. dead-relu.max_dead_fraction=0.7")
        overrides[key.strip()] = parse_value(value.strip())
    for preset in presets.PRESETS:  # refuse unknown names and impossible values before reading anything
        resolve_thresholds(presets.thresholds_for(preset, overrides))
    tag_overrides = dict(parse_override(t) for t in args.tag)
    if args.num_classes is not None and args.num_classes < 2:
        raise ValueError(f"--num-classes must be at least 2, got {args.num_classes}")
    if args.interval <= 0 or (args.timeout is not None and args.timeout < 0):
        raise ValueError("--interval must be > 0 and --timeout >= 0")
    return dict(overrides=overrides, tag_overrides=tag_overrides, num_classes=args.num_classes,
                preset=args.preset)


def _status(reports: list[dict], fail_on: str) -> int:
    w = worst(reports)
    return 1 if w is not None and SEVERITIES.index(w) >= SEVERITIES.index(fail_on) else 0


def _nothing_to_check(session: Session, reports: list[dict]) -> str | None:
    if not reports:
        return (f"no TensorBoard event files (nor findings.jsonl) under {', '.join(session.logdirs)}")
    if not any(r["steps"] or r["findings"] for r in reports):
        return "no run holds a curve or recorded finding nnhealth can check (see the problems above)"
    return None


def _print(text: str) -> None:
    """Print, and stop quietly when the reader went away (``nnhealth check runs | head``)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise _ReaderGone from None


class _ReaderGone(Exception):
    pass


def _emit(obj, as_json: bool, text: str) -> None:
    _print(json.dumps(obj) if as_json else text)


def _follow(session: Session, args) -> list[dict]:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    said: set = set()

    def report_new(reports):
        for r in reports:
            for f in r["findings"]:
                key = (r["run"], f["symptom"], f["where"], f["step"], f["source"])
                if key not in said:
                    said.add(key)
                    _emit({"event": "finding", "run": r["run"], "finding": f}, args.json, finding_line(r, f))
            for p in r["problems"]:
                if (r["run"], p) not in said:
                    said.add((r["run"], p))
                    _emit({"event": "problem", "run": r["run"], "problem": p}, args.json,
                          f"{r['run']}: problem: {p}")

    try:
        while True:
            report_new(session.poll(final=False))
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            time.sleep(args.interval if left is None else min(args.interval, left))
    except KeyboardInterrupt:
        pass
    reports = session.poll(final=True)
    report_new(reports)
    return reports


def _report(session: Session, args) -> list[dict]:
    if args.follow:
        reports = _follow(session, args)
        if args.json:
            _emit({"event": "summary", "runs": reports}, True, "")
    else:
        reports = session.poll(final=True)
        if args.json:
            _print(json.dumps(reports, indent=2))
    if not args.json and reports:
        _print(("\n" if args.follow else "") + table(reports, args.fail_on))
    return reports


def run(args) -> int:
    session = Session(args.logdirs, **_options(args))
    try:
        reports = _report(session, args)
    except _ReaderGone:
        reports = session.reports()
    for d in session.empty_logdirs():
        if reports:
            print(f"nnhealth check: {d}: no TensorBoard event files (nor findings.jsonl) under it",
                  file=sys.stderr)
    empty = _nothing_to_check(session, reports)
    if empty:
        print(f"nnhealth check: error: {empty}", file=sys.stderr)
        return 2
    return _status(reports, args.fail_on)
