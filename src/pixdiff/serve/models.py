"""The models a server holds: loaded once at start and kept in memory, each under a short name.

A model that fails to load is kept as an entry with its error: ``/v1/models`` reports it as
unavailable, a request for it is refused with that reason, and every other model keeps serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pixdiff.pipelines.model import CascadeModel, Model, load
from pixdiff.shipped import SHIPPED_CASCADES, SHIPPED_RUNS

SHIPPED = (*SHIPPED_RUNS, *SHIPPED_CASCADES)  # runs first: a cascade reuses its loaded stages


class ModelUnavailable(LookupError):
    """A request names a model the server does not have, or one that failed to load."""

    def __init__(self, message: str, *, status: int):
        super().__init__(message)
        self.status = status


@dataclass
class Entry:
    """One model of the server: its name, where it came from, and the loaded model or why it
    failed to load."""

    name: str
    source: str
    model: Model | CascadeModel | None = None
    error: str | None = None

    def info(self) -> dict:
        """What the page and API clients need: kind, image shape, classes and defaults."""
        if self.model is None:
            return {"name": self.name, "source": self.source, "available": False,
                    "error": self.error}  # fmt: skip
        if isinstance(self.model, CascadeModel):
            stages = [m.info() for m in self.model.models]
            first, last = stages[0], stages[-1]
            kind, shape = "cascade", last["image_shape"]
        else:
            first = self.model.info()
            kind, shape = first["kind"], first["image_shape"]
        return {
            "name": self.name,
            "source": self.source,
            "available": True,
            "kind": kind,
            "image_shape": shape,
            "low_res_size": self.low_res_size(),
            "classes": first["classes"],
            "defaults": {k: first[k] for k in ("sampler", "steps", "guidance")},
            "stages": [s["image_shape"] for s in stages] if kind == "cascade" else None,
        }

    def low_res_size(self) -> int | None:
        """The input size of a super-resolution model, else None."""
        model = self.model
        return model.sr.low_res_size if isinstance(model, Model) and model.sr else None


class ModelPool:
    """Named models loaded once on ``device``; see the module docstring."""

    def __init__(self, sources: Sequence[str] = SHIPPED, *, device: str = "cpu"):
        self.device = device
        self.entries: dict[str, Entry] = {}
        for source in sources:
            self._add(source)

    def _add(self, source: str) -> None:
        name = _unique(short_name(source), self.entries)
        entry = Entry(name, source)
        try:
            if source in SHIPPED_CASCADES and not Path(source).exists():
                entry.model = CascadeModel([self._stage(run) for run in SHIPPED_CASCADES[source]])
            else:
                entry.model = load(source, device=self.device)
        except Exception as e:  # a model that fails to load must not stop the rest
            entry.error = f"failed to load {source}: {first_line(e)}"
        self.entries[name] = entry

    def _stage(self, run: str) -> Model:
        """A cascade's stage: the pool's own copy of that shipped run when it holds one."""
        held = self.entries.get(run)
        if held is not None and isinstance(held.model, Model):
            return held.model
        return load(run, device=self.device)

    def get(self, name: str) -> Model | CascadeModel:
        """The loaded model called ``name``; ModelUnavailable (404 unknown, 503 failed)."""
        entry = self.entries.get(name)
        if entry is None:
            raise ModelUnavailable(
                f"unknown model {name!r}; available: {self.available()}", status=404
            )
        if entry.model is None:
            raise ModelUnavailable(f"model {name!r} is unavailable: {entry.error}", status=503)
        return entry.model

    def available(self) -> list[str]:
        return [name for name, e in self.entries.items() if e.model is not None]

    def info(self) -> list[dict]:
        return [e.info() for e in self.entries.values()]


def short_name(source: str) -> str:
    """A shipped model's name, else the run directory's (or checkpoint's folder's) name."""
    if source in SHIPPED_RUNS or source in SHIPPED_CASCADES:
        return source
    path = Path(source)
    return (path.parent.name if path.suffix == ".safetensors" else path.name) or source


def _unique(name: str, taken: dict) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when it is taken."""
    k, candidate = 2, name
    while candidate in taken:
        candidate, k = f"{name}-{k}", k + 1
    return candidate


def first_line(error: BaseException) -> str:
    """An exception as one line: its message's first line, or its type when it has none."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
