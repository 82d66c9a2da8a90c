"""Reading training logs back: any tool's TensorBoard event files, and nnhealth's own.

- :mod:`.discovery` finds the runs under a log folder, as TensorBoard does;
- :mod:`.records` and :mod:`.events` read event files incrementally and say
  exactly which file and byte is damaged;
- :mod:`.runlog` keeps one run's curves and recorded states;
- :mod:`.tags` maps tag names to the signals the rules read;
- :mod:`.presets` adapts thresholds to curves logged once per epoch;
- :mod:`.replay` runs a recorded run through the rules again;
- :mod:`.render` prints the reports of ``nnhealth check``;
- :func:`load` returns every curve as a tidy pandas frame.

Only :func:`load` is imported here, so ``import nnhealth`` stays light.
"""
from .frame import LogReadWarning, load

__all__ = ["LogReadWarning", "load"]
