"""Log folders from anywhere: nothing evaluated, sizes checked before allocation, names escaped in HTML.

``nnhealth check`` and ``nnhealth report`` read event files and
findings.jsonl that anyone may have written. Already covered elsewhere: an
absurd record length in the check reader
(tests/test_logs_records.py::test_an_absurd_length_is_refused_before_anything_is_allocated),
damaged and foreign files (tests/test_check_robust.py), a layer called
``<script>`` in the report page and in a real browser
(tests/test_report.py::test_html_report_is_self_contained_with_every_figure_and_the_findings,
tests/test_report_chromium.py). Random files and events: tests/test_fuzz_readers.py.
"""
from __future__ import annotations

import ast
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from nnhealth.dashboards.event_file import EventFile, masked_crc32c
from nnhealth.dashboards.report import write_html
from nnhealth.dashboards.run_data import read_run
from tensorboard.compat.proto import (
    event_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)

import nnhealth
from nnhealth import Monitor
from nnhealth.cli import main
from nnhealth.logs.discovery import find_runs
from nnhealth.logs.runlog import RunLog
from nnhealth.sinks.jsonl import read_findings
from nnhealth.stats import summarize

ROOT = Path(nnhealth.__file__).resolve().parent.parent

#: the code that reads files it did not write
READERS = ["nnhealth/logs", "dashboards", "nnhealth/sinks", "nnhealth/commands/check.py",
           "nnhealth/commands/report.py", "nnhealth/finding.py"]
#: modules that turn bytes into code or arbitrary objects
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "yaml",
                  "jsonpickle", "torch"}
#: calls that run text as code, or unpickle
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
#: methods that unpickle or import (``json.load``/``json.loads`` excepted: JSON makes only plain data)
UNSAFE_METHODS = {"load", "loads", "read_pickle", "unsafe_load", "full_load", "import_module"}


def unsafe_uses(source: str, filename: str = "<source>") -> list[str]:
    """Each import of an unsafe module and each call of an unsafe function in ``source``.

    ``json.load(s)`` is the one ``load``/``loads`` allowed: JSON builds only dicts, lists, strings and numbers.
    """
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"{filename}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{filename}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
            if (isinstance(func, ast.Name) and name in UNSAFE_BUILTINS) or (
                    isinstance(func, ast.Attribute) and name in UNSAFE_METHODS and owner != "json"):
                found.append(f"{filename}:{node.lineno}: {owner + '.' if owner else ''}{name}(...)")
            if any(k.arg == "allow_pickle" for k in node.keywords):
                found.append(f"{filename}:{node.lineno}: allow_pickle=")
    return found


def test_the_scanner_finds_what_it_looks_for():
    bad = textwrap.dedent("""
        import pickle
        from yaml import load
        import numpy as np
        def f(s, path):
            eval(s); exec(s); pickle.loads(s); np.load(path, allow_pickle=True)
            import torch; torch.load(path)
        json.loads(s); re.compile(s)
    """)
    assert sorted(unsafe_uses(bad)) == sorted([
        "<source>:2: import pickle", "<source>:3: from yaml import ...", "<source>:6: eval(...)",
        "<source>:6: exec(...)", "<source>:6: pickle.loads(...)", "<source>:6: np.load(...)",
        "<source>:6: allow_pickle=", "<source>:7: import torch", "<source>:7: torch.load(...)"])


def test_the_readers_never_unpickle_or_evaluate():
    files = [p for entry in READERS for p in ([ROOT / entry] if entry.endswith(".py")
                                              else sorted((ROOT / entry).rglob("*.py")))]
    assert len(files) > 20
    found = [hit for f in files for hit in unsafe_uses(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert found == []


# -- sizes checked before allocation ---------------------------------------------------------------

def _shape(*dims):
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])


def _value(tag, plugin, tensor, content=b""):
    v = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
    v.metadata.plugin_data.plugin_name = plugin
    v.metadata.plugin_data.content = content
    return v


def _run(folder: Path, *values) -> Path:
    """A run whose loss is fine, plus ``values`` at step 1."""
    writer = EventFile(folder)
    writer.add_event(event_pb2.Event(step=0, wall_time=time.time(), summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="loss/train", simple_value=1.0)])))
    if values:
        writer.add_event(event_pb2.Event(step=1, wall_time=time.time(), summary=summary_pb2.Summary(value=values)))
    writer.close()
    return writer.path


HUGE = 1 << 34   # 2**34 numbers: 64 GiB as float32


def hostile_runs(root: Path) -> dict[str, Path]:
    """Folders whose files declare absurd sizes: a reader that believes them allocates tens of GiB."""
    runs = {name: root / name for name in ("scalar", "histogram", "text", "state", "record", "findings")}
    for folder in runs.values():
        folder.mkdir()
    _run(runs["scalar"], _value("loss/train", "scalars", tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=_shape(HUGE), float_val=[1.0])))
    _run(runs["histogram"], _value("activation_hist/fc1", "histograms", tensor_pb2.TensorProto(
        dtype=types_pb2.DT_DOUBLE, tensor_shape=_shape(HUGE, 3), double_val=[1.0])))
    _run(runs["text"], _value("nnhealth/run", "text", tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=_shape(HUGE), string_val=[b'{"every": 1}'])))
    layout = json.dumps({"version": 1, "role": "activation", "where": "fc1",
                         "layout": {"hist": False, "units": HUGE}, "meta": {}}).encode()
    _run(runs["state"], _value("nnhealth_state/activation/fc1", "nnhealth", tensor_pb2.TensorProto(
        dtype=types_pb2.DT_DOUBLE, tensor_shape=_shape(HUGE), double_val=[1.0]), layout))
    path = _run(runs["record"])
    head = struct.pack("<Q", HUGE)  # a record header with a valid checksum announcing 16 GiB
    with open(path, "ab") as fh:
        fh.write(head + struct.pack("<I", masked_crc32c(head)) + b"x" * 64)
    _run(runs["findings"])
    with open(runs["findings"] / "findings.jsonl", "wb") as fh:
        fh.truncate(65 << 20)  # sparse: 65 MiB to read, nothing on disk
    return runs


READ_ALL = textwrap.dedent("""
    import contextlib, io, json, resource, sys
    from nnhealth.cli import main
    from nnhealth.dashboards.run_data import read_run
    # from here on, any allocation beyond 1 GiB more than what the imports took fails with MemoryError
    pages = int(open("/proc/self/statm").read().split()[0])
    limit = pages * resource.getpagesize() + (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = {}
    for folder in sys.argv[1:]:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            status = main(["check", "--json", folder])
        (check,) = json.loads(buf.getvalue())
        out[folder] = {"status": status, "check": check["problems"], "report": read_run(folder).problems}
    print(json.dumps(out))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="limits the address space with RLIMIT_AS")
def test_declared_sizes_are_checked_before_anything_is_allocated(tmp_path):
    runs = hostile_runs(tmp_path)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", READ_ALL, *map(str, runs.values())], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    got = {Path(k).name: v for k, v in json.loads(done.stdout).items()}
    assert {name: r["status"] for name, r in got.items()} == dict.fromkeys(runs, 0)

    def said(name, where, *words):
        return any(all(w in p for w in words) for p in got[name][where])

    assert said("scalar", "check", f"holds {HUGE} numbers per step, not one")
    assert said("scalar", "report", "loss/train: 1 value(s) skipped")
    assert said("histogram", "report", "activation_hist/fc1: 1 value(s) skipped")
    assert said("text", "report", "nnhealth/run: 1 value(s) skipped")
    assert said("state", "check", "state layout of", "is not plausible")
    for where in ("check", "report"):
        assert said("record", where, f"record announces {HUGE} bytes, over the")
        assert said("findings", where, "findings.jsonl: larger than 67108864 bytes, not read")


# -- regressions found by the fuzzers (tests/test_fuzz_readers.py, tests/test_fuzz_stats.py) --------

def test_json_nested_too_deep_is_a_named_problem(tmp_path):
    deep = "[" * 200_000 + "]" * 200_000
    (tmp_path / "findings.jsonl").write_text(deep + "\n" + json.dumps(
        {"symptom": "dead-relu", "severity": "warning", "step": 3, "where": "fc1", "message": "m"}) + "\n")
    findings, problems = read_findings(tmp_path / "findings.jsonl")
    assert [f.symptom for f in findings] == ["dead-relu"]
    (problem,) = problems
    assert problem.startswith(f"{tmp_path / 'findings.jsonl'}:1: unreadable finding (RecursionError")
    layout = ("[" * 30_000 + "]" * 30_000).encode()  # a state description, within its 64 kB limit
    _run(tmp_path, _value("nnhealth_state/activation/fc1", "nnhealth", tensor_pb2.TensorProto(
        dtype=types_pb2.DT_DOUBLE, tensor_shape=_shape(3), double_val=[1.0, 2.0, 3.0]), layout))
    (spec,) = find_runs(tmp_path)
    log = RunLog(spec)
    log.poll()
    assert any("state description is not valid JSON" in p for p in log.problems())
    assert any("unreadable metadata" in p for p in read_run(tmp_path).problems)


@pytest.mark.parametrize("record, why", [
    ({"symptom": "dead-relu", "severity": "warning", "step": 1, "where": ["fc1"]}, "symptom and where are strings"),
    ({"symptom": None, "severity": "warning", "step": 1}, "symptom and where are strings"),
    ('{"symptom": "loss-nan", "severity": "critical", "step": Infinity}', "step is a whole number, got inf"),
    ({"symptom": "loss-nan", "severity": "critical", "step": "7"}, "step is a whole number, got '7'"),
    ({"symptom": "loss-nan", "severity": "fatal", "step": 7}, "severity must be one of"),
    ([1, 2, 3], "a finding record is a JSON object, got list"),
])
def test_a_finding_record_of_the_wrong_shape_is_a_named_problem(tmp_path, record, why):
    line = record if isinstance(record, str) else json.dumps(record)
    (tmp_path / "findings.jsonl").write_text(line + "\n")
    findings, (problem,) = read_findings(tmp_path / "findings.jsonl")
    assert findings == [] and why in problem


def _check_state(tmp_path, capsys, layout, stored, version: int) -> list[str]:
    """The problems ``nnhealth check --json`` reports for a run holding one activation state ``stored``."""
    info = json.dumps({"version": version, "role": "activation", "where": "fc1", "layout": layout.to_json(),
                       "meta": {"kind": "relu"}}).encode()
    _run(tmp_path, _value("nnhealth_state/activation/fc1", "nnhealth", tensor_pb2.TensorProto(
        dtype=types_pb2.DT_DOUBLE, tensor_shape=_shape(stored.size), double_val=stored.tolist()), info))
    assert main(["check", "--json", str(tmp_path)]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    return report["problems"]


def test_a_state_nnhealth_cannot_have_written_is_refused_before_the_rules_see_it(tmp_path, capsys):
    """A count of -5 passed every size check; the replay's rules would have divided by it."""
    layout, vector = summarize(np.maximum(np.random.default_rng(0).standard_normal((16, 4)), 0), "relu")
    vector[0] = -5.0
    assert _check_state(tmp_path, capsys, layout, vector, version=1) == [
        f"{tmp_path}: tag 'nnhealth_state/activation/fc1' holds a state nnhealth cannot have written (count is not "
        "a whole number >= 0); skipped"]


@pytest.mark.parametrize("lo, n", [(1549, 1), (-1, 3), (0.5, 2), (float("nan"), 1), (0, 10**9)],
                         ids=["past-the-end", "negative", "fraction", "nan", "huge"])
def test_a_trimmed_histogram_range_that_does_not_fit_is_refused(tmp_path, capsys, lo, n):
    layout, vector = summarize(np.maximum(np.random.default_rng(0).standard_normal((16, 4)), 0), "relu", hist=True)
    stored = np.concatenate([vector[:11], [lo, n], vector[11:11 + 3]])
    (problem,) = _check_state(tmp_path, capsys, layout, stored, version=2)
    assert "nnhealth_state/activation/fc1" in problem and "skipped" in problem


@pytest.mark.parametrize("tensor", [
    tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE),                  # no numpy type
    tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, int_val=[-1]),       # out of its type's range
], ids=["resource", "uint8-minus-one"])
def test_a_tensor_numpy_cannot_hold_is_skipped_by_both_readers(tmp_path, tensor, capsys):
    _run(tmp_path, _value("loss/train", "scalars", tensor))
    run = read_run(tmp_path)
    assert list(run.scalars["loss/train"][1]) == [1.0]
    assert run.problems == ["loss/train: 1 value(s) skipped: not a readable scalars value (wrong shape or type, or "
                            "more numbers than such a value holds)"]
    assert main(["check", "--json", str(tmp_path)]) in (0, 2)
    (report,) = json.loads(capsys.readouterr().out)
    assert len(report["problems"]) == 1 and "loss/train" in report["problems"][0]


def test_statistics_of_arrays_without_units():
    from nnhealth.stats import summary_of

    for shape in ((0,), (3, 0), (2, 0, 4)):
        s = summary_of(np.zeros(shape), "relu", hist=True, units=True, moments=True)
        assert s.count == 0 and s.layout.units == shape[-1]


# -- names escaped in HTML -----------------------------------------------------------------------------

MARKUP = '<script>alert("x")</script>'
IMG = '<img src=x onerror=alert(1)>'


def test_every_name_a_file_can_carry_is_escaped_in_the_report(tmp_path):
    run = tmp_path / f"run{IMG}"
    with Monitor(logdir=run, every=1, console=False, tensorboard=True) as mon:
        rng = np.random.default_rng(0)
        for step in range(6):
            mon.observe_activation(MARKUP, np.maximum(rng.standard_normal((64, 16)) - 5, 0), kind="relu")
            mon.step(step, loss=1.0, **{IMG: 0.5})
    with open(run / "findings.jsonl", "a", encoding="utf-8") as fh:  # another writer's findings
        fh.write(json.dumps({"symptom": MARKUP, "severity": "warning", "step": 2, "where": IMG, "message": MARKUP,
                             "evidence": {IMG: MARKUP}, "advice": IMG}) + "\n")
        fh.write(f"not json {MARKUP}\n")
    _run(run, _value("nnhealth/run", "text", tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=_shape(1),
        string_val=[json.dumps({"every": MARKUP, "num_classes": IMG}).encode()])))
    out, data, _ = write_html(run, tmp_path / "report.html")
    page = out.read_text(encoding="utf-8")
    assert len(data.findings) >= 2 and data.problems
    for hostile in (MARKUP, IMG, "<script", "<img src=x"):
        assert hostile not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
