"""The server's settings (the ``pixdiff serve`` flags) and the per-request caps; plain
dataclasses, so that ``pixdiff serve --help`` needs no web framework."""

from __future__ import annotations

from dataclasses import dataclass, field


class CapExceeded(ValueError):
    """A request over one of the server's caps (answered with 422 naming it)."""


@dataclass(frozen=True)
class Caps:
    """Per-request caps: images, sampler steps, and work = pixels x images x NFE summed over a
    cascade's stages (the network evaluations a request costs, weighted by image size)."""

    max_n: int = 16
    max_steps: int = 250
    max_work: int = 8_000_000

    def check(self, *, n: int, steps: int, stages: list[tuple[int, int]]) -> int:
        """Raise CapExceeded naming the first cap hit; ``stages`` holds (pixels, NFE) of each
        stage. Returns the work."""
        if n > self.max_n:
            raise CapExceeded(f"n = {n} is over the cap --max-n {self.max_n}")
        if steps > self.max_steps:
            raise CapExceeded(f"{steps} steps is over the cap --max-steps {self.max_steps}")
        work = sum(pixels * n * nfe for pixels, nfe in stages)
        if work > self.max_work:
            terms = " + ".join(f"{p} pixels x {n} images x {nfe} NFE" for p, nfe in stages)
            raise CapExceeded(
                f"work {terms} = {work:,} is over the cap --max-work {self.max_work:,}"
            )
        return work


@dataclass(frozen=True)
class ServeConfig:
    """The server's settings (``pixdiff serve`` flags)."""

    caps: Caps = field(default_factory=Caps)
    token: str | None = None
    queue: int = 64
    concurrency: int = 1
    timeout: float = 300.0
    batch_window: float = 0.02
    max_batch: int = 64
    max_upload: int = 4 * 2**20
    max_body: int = 64 * 2**10
