"""Statistics as mergeable states, written once for every array library.

- :func:`summarize` packs one array into a flat vector on its own device;
- :class:`Summary` reads a packed vector on the host and merges with others;
- :mod:`~nnhealth.stats.histogram` holds the fixed histogram edges;
- :mod:`~nnhealth.stats.kinds` says what "saturated" means per activation.
"""
from .compute import default_unit_axis, summarize, summary_of
from .histogram import NUM_BUCKETS, quantiles
from .kinds import KINDS, Kind, get_kind
from .summary import HEADER, Layout, Summary, merge_vectors

__all__ = ["HEADER", "KINDS", "Kind", "Layout", "NUM_BUCKETS", "Summary", "default_unit_axis",
           "get_kind", "merge_vectors", "quantiles", "summarize", "summary_of"]
