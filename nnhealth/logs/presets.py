"""Threshold presets for curves logged once per epoch.

The rules' defaults assume a loss logged at every training step (thousands
of noisy points): ``loss-not-decreasing`` waits for 50 values, ``init-plateau``
for a 20-value plateau smoothed over 5, ``loss-exploding`` takes the first
value as the start and wants 2 values in a row above 3x it.
A curve logged once per epoch has tens of points, each already the mean of
an epoch: with the defaults the first two rules would never judge, and an
epoch-long explosion that settles back near chance would be missed.

``nnhealth check`` uses the per-epoch preset when the loss tag is an epoch
tag (Keras ``epoch_loss``, Lightning ``*_epoch``) or, once a run is
finished, when its loss curve has fewer than :data:`MIN_STEP_POINTS`
points. ``--preset`` forces either; ``--set RULE.NAME=VALUE`` always wins
over a preset.
"""
from __future__ import annotations

#: a finished loss curve with fewer points than this is taken for a per-epoch one
MIN_STEP_POINTS = 50

PRESETS: dict[str, dict[str, float]] = {
    "step": {},
    "epoch": {
        # the first epoch's mean is the start; one epoch above 3x it is already sustained
        "loss-exploding.start_points": 1,
        "loss-exploding.sustain": 1,
        # five epochs are enough to see a loss that does not move; medians of three epochs, so that
        # one odd epoch (a spike) does not decide alone
        "loss-not-decreasing.min_points": 5,
        "loss-not-decreasing.window": 3,
        # epoch means need no smoothing; a plateau of five epochs is a long one
        "init-plateau.min_plateau_points": 5,
        "init-plateau.smooth": 1,
    },
}

#: rules that cannot judge per-epoch curves at all, with the reason shown to the user
SKIPPED: dict[str, dict[str, str]] = {
    "step": {},
    "epoch": {
        "initial-loss-unexpected": "the first loss value is a mean over the first epoch, not the loss at "
                                   "initialisation",
    },
}


def thresholds_for(preset: str, overrides: dict | None = None) -> dict:
    """The preset's thresholds with the user's ``--set`` overrides on top."""
    out = dict(PRESETS[preset])
    out.update(overrides or {})
    return out


def markdown() -> str:
    """The presets as a markdown table (kept in docs/check.md; a test keeps them equal)."""
    from ..config import resolve_thresholds

    defaults = resolve_thresholds()
    lines = ["| threshold | per step (default) | per epoch |", "| --- | --- | --- |"]
    for key, value in PRESETS["epoch"].items():
        rid, _, name = key.rpartition(".")
        lines.append(f"| `{key}` | {getattr(defaults[rid], name)} | {value} |")
    for rid, why in SKIPPED["epoch"].items():
        lines.append(f"| `{rid}` | judged | not judged: {why} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
