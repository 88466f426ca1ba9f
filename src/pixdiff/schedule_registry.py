"""Schedules by name: the registry of every schedule kind, and building one from its config."""

from __future__ import annotations

from dataclasses import fields

from pixdiff.discrete_schedules import BETA_KINDS, DiscreteSchedule
from pixdiff.schedules import CONTINUOUS_SCHEDULES, Schedule
from pixdiff.shifted_schedules import shifted

SCHEDULES: dict[str, type[Schedule]] = {
    c.kind: c for c in (DiscreteSchedule, *CONTINUOUS_SCHEDULES)
}
# Short names: the discrete beta kinds resolve to DiscreteSchedule(beta_kind=name).
SCHEDULE_NAMES = sorted([*SCHEDULES, *BETA_KINDS])
# Options of every continuous schedule: its log-SNR shift (shifted_schedules.py).
SHIFT_OPTIONS = ("shift", "interpolate")


def schedule_from_dict(d: dict) -> Schedule:
    """Build a schedule from ``to_dict()`` output; unknown keys raise listing the valid ones.

    ``shift`` (a number) and ``interpolate`` (bool) wrap the schedule in a
    :class:`~pixdiff.shifted_schedules.ShiftedSchedule` (Hoogeboom et al. 2023, Sec. 3.1).
    """
    d = dict(d)
    shift, interpolate = d.pop("shift", None), d.pop("interpolate", None)
    kind = d.pop("kind", None)
    if kind in BETA_KINDS:
        d.setdefault("beta_kind", kind)
        kind = "discrete"
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; valid: {SCHEDULE_NAMES}")
    cls = SCHEDULES[kind]
    valid = [f.name for f in fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(valid))
    if unknown:
        valid += SHIFT_OPTIONS
        raise ValueError(f"unknown option(s) {unknown} for schedule {kind!r}; valid: {valid}")
    base = cls(**d)
    if shift is None:
        if interpolate is not None:
            raise ValueError("schedule option 'interpolate' needs a 'shift' (the log-SNR shift)")
        return base
    if interpolate is not None and not isinstance(interpolate, bool):
        raise ValueError(
            f"schedule option 'interpolate' must be true or false, got {interpolate!r}"
        )
    return shifted(base, shift, interpolate=bool(interpolate))


def get_schedule(name: str) -> Schedule:
    """A schedule by name with its published defaults, e.g. 'linear', 'cosine', 'edm', 'flow'."""
    return schedule_from_dict({"kind": name})
