"""Schedules by name: the registry of every schedule kind, and building one from its config."""

from __future__ import annotations

from dataclasses import fields

from pixdiff.discrete_schedules import BETA_KINDS, DiscreteSchedule
from pixdiff.schedules import CONTINUOUS_SCHEDULES, Schedule

SCHEDULES: dict[str, type[Schedule]] = {
    c.kind: c for c in (DiscreteSchedule, *CONTINUOUS_SCHEDULES)
}
# Short names: the discrete beta kinds resolve to DiscreteSchedule(beta_kind=name).
SCHEDULE_NAMES = sorted([*SCHEDULES, *BETA_KINDS])


def schedule_from_dict(d: dict) -> Schedule:
    """Build a schedule from ``to_dict()`` output; unknown keys raise listing the valid ones."""
    d = dict(d)
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
        raise ValueError(f"unknown option(s) {unknown} for schedule {kind!r}; valid: {valid}")
    return cls(**d)


def get_schedule(name: str) -> Schedule:
    """A schedule by name with its published defaults, e.g. 'linear', 'cosine', 'edm', 'flow'."""
    return schedule_from_dict({"kind": name})
