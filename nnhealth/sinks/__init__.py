"""Where findings and statistics go: the console, findings.jsonl, TensorBoard (nnhealth.dashboards).

A sink has three methods, all optional to do anything in:
``write_step(record)``, ``write_finding(finding)`` and ``close()``.
Sinks never compute statistics; they only write what the monitor hands them.
"""
from .base import Sink, StepRecord
from .console import ConsoleSink, summary_table
from .jsonl import FindingsFile

__all__ = ["ConsoleSink", "FindingsFile", "Sink", "StepRecord", "summary_table"]
