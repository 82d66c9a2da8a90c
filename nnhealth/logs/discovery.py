"""Finding the runs under a log folder, the way TensorBoard does.

TensorBoard treats every folder under ``--logdir`` that directly holds an
event file as one run (``io_wrapper.GetLogdirSubdirectories``). Two
additions: a folder holding nnhealth's ``findings.jsonl`` is a run too (a
Monitor with ``tensorboard=False`` writes only that), and the ``train/`` and
``validation/`` folders Keras writes (also ``val/``, ``eval/``) are halves of
one run: their tags are read as ``train/epoch_loss``,
``validation/epoch_loss``...
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tensorboard.backend.event_processing import io_wrapper

from ..sinks.jsonl import FILENAME as FINDINGS_FILE

#: sub-folders that are one split of a run; their name prefixes the tags read from them
SPLITS = ("train", "validation", "val", "eval")


@dataclass(frozen=True)
class RunSpec:
    """One run: its name as shown, its folder, and the folders its tags come from."""

    name: str
    path: Path
    #: (tag prefix, folder): ("", run folder) or ("train/", run/train), ("validation/", run/validation)...
    parts: tuple


def check_logdir(logdir) -> Path:
    path = Path(logdir)
    if not path.exists():
        raise FileNotFoundError(f"{logdir}: no such directory")
    if not path.is_dir():
        raise NotADirectoryError(f"{logdir}: not a directory (give the folder that holds the event files)")
    return path


def event_files(folder: Path) -> list[Path]:
    """The event files directly in ``folder``, in TensorBoard's reading order (by name: by creation time)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(folder / n for n in names if io_wrapper.IsSummaryEventsFile(n) and (folder / n).is_file())


def find_runs(logdir) -> list[RunSpec]:
    """Every run under ``logdir``, sorted by name."""
    root = check_logdir(logdir)
    folders = {Path(p) for p in io_wrapper.GetLogdirSubdirectories(str(root))}
    folders |= {Path(d) for d, _, files in os.walk(root) if FINDINGS_FILE in files}
    runs: dict[str, dict[str, Path]] = {}
    for folder in folders:
        rel = Path(os.path.relpath(folder, root))
        if folder.name in SPLITS:
            run_rel = rel.parent if rel != Path(".") else rel
            prefix = f"{folder.name}/"
        else:
            run_rel, prefix = rel, ""
        runs.setdefault(str(run_rel), {})[prefix] = folder
    out = []
    for run_rel, parts in runs.items():
        path = root if run_rel == "." else root / run_rel
        out.append(RunSpec(name=os.path.normpath(os.path.join(str(logdir), run_rel)), path=path,
                           parts=tuple(sorted(parts.items()))))
    return sorted(out, key=lambda r: r.name)
