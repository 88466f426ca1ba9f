"""Parallel sampling by Picard iteration: ParaDiGMS (Shih et al. 2023, Alg. 1).

A one-step sampler is the sequence x_{k+1} = step(x_k, t_k, t_{k+1}) = x_k + drift_k(x_k). Picard
iteration solves it over a window [a, a + w) of steps at once: from guesses x^p,

    x^{p+1}_{a+j+1} = x_a + sum_{i <= j} drift_{a+i}(x^p_{a+i}),    j = 0 .. w - 1,

with the w drifts evaluated in ONE batched network call. Step a + j is exact after j + 1
iterations, so the run never takes more rounds than steps; on a smooth trajectory it takes far
fewer. The window slides past every state whose change ||x^{p+1} - x^p||^2 stays within
tolerance^2 times the step's noise variance (the ParaDiGMS rule). The same drifts cost the
same network evaluations (NFE) in fewer sequential rounds: a win only where the device has
spare batch capacity (a GPU at small batch), not on a CPU, whose time grows with the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised
from pixdiff.posterior import posterior
from pixdiff.samplers.common import Generators, SamplingError, check_grid
from pixdiff.self_conditioning import SelfConditioning, takes_estimate, with_estimate

# A one-step method with its options bound: step(denoiser, x, t, s, *, cond, generator).
Step = Callable[..., Tensor]


@dataclass(frozen=True, kw_only=True)
class Picard:
    """Run a one-step sampler by Picard iteration over a sliding window (ParaDiGMS, Shih et al.
    2023, Alg. 1): see :func:`sample_picard`.

    Args:
        window: steps evaluated together, as one batch of window x N samples.
        tolerance: how far a state may still move, as a fraction of its step's noise std
            (Shih et al.'s tau; smaller is closer to the sequential sample, in more rounds).
        stats: if a dict is given, "nfe", "rounds" and "sequential" (the sequential run's
            network rounds) are added to it, so one dict totals a run of several batches.
    """

    window: int = 16
    tolerance: float = 1e-3
    stats: dict | None = field(default=None, compare=False)

    def __post_init__(self):
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"the Picard window must be a whole number >= 1, got {self.window!r}")
        if not (math.isfinite(self.tolerance) and self.tolerance > 0):
            raise ValueError(
                f"the Picard tolerance must be a number > 0 (e.g. 1e-3), got {self.tolerance!r}"
            )


def sample_picard(
    step: Step,
    denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    window: int = 16,
    tolerance: float = 1e-3,
    stats: dict | None = None,
    cond: Cond | None = None,
    generator: Generators = None,
    progress: bool = False,
) -> Tensor:
    """The one-step sampler ``step`` over the grid ``ts`` by Picard iteration on a sliding
    window (ParaDiGMS, Shih et al. 2023, Alg. 1); it converges to the sequential run's sample,
    noise included, as tolerance -> 0. Arguments as :class:`Picard`.

    Each round steps every window state once, their network calls batched (a multi-stage
    step takes one round per stage); the states are updated by the cumulative drifts and the
    window slides past those that moved at most tolerance x their step's noise std.

    A self-conditioned denoiser's previous x0 estimate (Chen et al. 2023, Alg. 2) is part of
    each window state: state j carries the estimate of the last evaluation of step j - 1 and
    is updated with it like x, so the fixed point is the sequential run's, estimates included.
    A :class:`~pixdiff.self_conditioning.SelfConditioning` wrapper given (one inpainting
    step) lends its estimate and gets the run's last one back.
    """
    check_grid(ts)
    wrapper = denoiser if isinstance(denoiser, SelfConditioning) else None
    denoiser, carried = _own_estimate(denoiser, x)
    steps = len(ts) - 1
    variance = posterior(denoiser.schedule, ts[:-1], ts[1:]).var_small.tolist()
    stub = _Stub(denoiser.schedule)
    tape = NoiseTape(
        generator, lambda k, g: step(stub, x, ts[k], ts[k + 1], cond=cond, generator=g)
    )
    xs, a, count = [x], 0, {"nfe": 0, "rounds": 0, "sequential": 0}
    bar = tqdm(total=steps, desc="picard", disable=not progress, leave=False)
    with torch.no_grad(), bar:
        while a < steps:
            n = min(window, steps - a)
            xs = xs[: n + 1] + [xs[-1]] * (n + 1 - len(xs))
            held = None if carried is None else carried[:n] + [carried[-1]] * (n - len(carried))
            stepped, calls, rounds, last = step_window(
                step, denoiser, xs[:n], ts[a : a + n + 1], cond=cond, tape=tape, first=a,
                carried=held,
            )  # fmt: skip
            new = picard_update(xs, stepped)
            stride = converged(xs, new, variance[a : a + n], tolerance**2)
            _check_finite(new[stride], a + stride, ts)
            _add(count, {"nfe": sum(calls), "rounds": rounds, "sequential": sum(calls[:stride])})
            a, xs = a + stride, new[stride:]
            carried = None if carried is None else [carried[0], *last][stride:]
            tape.forget(a)
            bar.update(stride)
    tape.rewind(steps)  # the generators end where the sequential run leaves them
    if stats is not None:
        _add(stats, count)
    if wrapper is not None:
        wrapper.previous = carried[0]
    return xs[0]


def _own_estimate(denoiser, x: Tensor):
    """(the denoiser to call, the x0 estimates carried into the window: [zeros] at the start,
    the same as none; None when the denoiser is not self-conditioned)."""
    if isinstance(denoiser, SelfConditioning):
        previous = denoiser.previous
        return denoiser.denoiser, [torch.zeros_like(x) if previous is None else previous]
    return denoiser, [torch.zeros_like(x)] if takes_estimate(denoiser) else None


def _add(totals: dict, counts: dict) -> None:
    """Add ``counts`` into ``totals``, key by key."""
    for key, value in counts.items():
        totals[key] = totals.get(key, 0) + value


def picard_update(xs: list[Tensor], stepped: list[Tensor]) -> list[Tensor]:
    """The Picard update x^{p+1}_{a+j+1} = x_a + sum_{i <= j} (step(x^p_{a+i}) - x^p_{a+i})
    (Shih et al. 2023, Alg. 1), written as step(x^p_{a+j}) + (x^{p+1}_{a+j} - x^p_{a+j}) so that a
    converged state's successor is its sequential step, bit for bit."""
    new = [xs[0]]
    for x_p, x_step in zip(xs[:-1], stepped, strict=True):
        new.append(x_step + (new[-1] - x_p))
    return new


def converged(xs: list[Tensor], new: list[Tensor], variance: Sequence[float], tol2: float) -> int:
    """How far the window slides (Shih et al. 2023, Alg. 1): to the first state j >= 1 whose
    per-sample mean-square change exceeds tol2 x the noise variance of the step into it (for
    any sample of the batch), else by the whole window. State 1 is exact (x_a is final), and
    the first state past the converged ones is too, as far as tolerance goes."""
    for j in range(1, len(new)):
        change = (new[j] - xs[j]).flatten(1).square().mean(1).max().item()
        if not change <= tol2 * variance[j - 1]:
            return j
    return len(new) - 1


def step_window(
    step: Step,
    denoiser,
    xs: list[Tensor],
    ts: Tensor,
    *,
    cond: Cond | None,
    tape: NoiseTape,
    first: int,
    carried: list[Tensor] | None = None,
) -> tuple[list[Tensor], list[int], int, list[Tensor] | None]:
    """step(xs[j], ts[j], ts[j + 1]) for every j, the network calls of all j batched.

    Each pass replays the steps with a stand-in denoiser that answers the calls already made
    and stops a step at its next one; those requests are then made as one batched call. A
    one-stage step (DDIM, Euler, DDPM) takes one pass; a k-stage step k passes. ``xs[j]`` is
    the state before step ``first + j``, whose noise ``tape`` replays. With ``carried`` (the
    x0 estimate carried into each state, for a self-conditioned denoiser) a step's first call
    gets it as ``cond.self_cond`` and each later call the estimate of the call before.

    Returns:
        the stepped states, each one's network evaluations, the batched calls made, and the
        x0 estimate of each step's last call (None without ``carried``).
    """
    answers: list[list[Denoised]] = [[] for _ in xs]
    rounds = 0
    while True:
        stepped, pending = [], []
        for j, x in enumerate(xs):
            stand_in = _Replay(denoiser.schedule, answers[j])
            try:
                stepped.append(
                    step(stand_in, x, ts[j], ts[j + 1], cond=cond, generator=tape.rewind(first + j))
                )
            except _Pending as request:
                pending.append((j, request))
        if not pending:
            last = None if carried is None else _last_estimates(answers, carried)
            return stepped, [len(a) for a in answers], rounds, last
        if carried is not None:
            for j, request in pending:
                previous = answers[j][-1].x0 if answers[j] else carried[j]
                request.cond = with_estimate(request.cond, previous)
        for (j, _), out in zip(
            pending, batched_call(denoiser, [r for _, r in pending]), strict=True
        ):
            answers[j].append(out)
        rounds += 1


def _last_estimates(answers: list[list[Denoised]], carried: list[Tensor]) -> list[Tensor]:
    """The x0 estimate each step leaves to the next: its last call's (else the one it got)."""
    return [a[-1].x0 if a else c for a, c in zip(answers, carried, strict=True)]


def batched_call(denoiser, requests: list[_Pending]) -> list[Denoised]:
    """One denoiser call for several (x, t, cond) requests: x concatenated along the batch, t
    as per-sample times (N,); the answer split back per request."""
    x = torch.cat([r.x for r in requests])
    t = torch.cat(
        [
            torch.as_tensor(r.t, dtype=torch.float64, device=x.device).expand(len(r.x))
            for r in requests
        ]
    )
    cond = None if requests[0].cond is None else Cond.cat([r.cond for r in requests])
    out = denoiser(x, t, cond)
    sizes = [len(r.x) for r in requests]
    parts = [[None] * len(sizes) if v is None else v.split(sizes) for v in out]
    return [Denoised(*fields) for fields in zip(*parts, strict=True)]


class _Pending(Exception):
    """A step asked for a network evaluation not made yet: (x, t, cond)."""

    def __init__(self, x: Tensor, t: Tensor, cond: Cond | None):
        super().__init__("network evaluation pending")
        self.x, self.t, self.cond = x, t, cond


class _Replay:
    """A denoiser's stand-in inside one step: answers its first calls from ``answers`` and
    raises :class:`_Pending` at the next."""

    def __init__(self, schedule, answers: list[Denoised]):
        self.schedule, self.answers, self.calls = schedule, answers, 0

    def __call__(self, x: Tensor, t: Tensor, cond: Cond | None = None) -> Denoised:
        if self.calls == len(self.answers):
            raise _Pending(x, t, cond)
        self.calls += 1
        return self.answers[self.calls - 1]


class _Stub:
    """A network that answers zeros: running a step on it draws the step's noise (which never
    depends on the input) without evaluating anything."""

    def __init__(self, schedule):
        self.schedule = schedule

    def __call__(self, x: Tensor, t: Tensor, cond: Cond | None = None) -> Denoised:
        zero = torch.zeros_like(x)
        return Denoised(zero, zero, zero, zero)


class NoiseTape:
    """The generator states at the start of each step, so that every Picard evaluation of step
    k draws the noise the sequential run draws there (ParaDiGMS samples each step's noise once,
    Shih et al. 2023, Alg. 1). A state past the known ones comes from running the steps
    between on :class:`_Stub` (``dry_run(k, generator)``); unseeded runs get a CPU generator
    seeded from torch's global one.
    """

    def __init__(self, generator: Generators, dry_run: Callable[[int, Generators], object]):
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        self.generator, self.dry_run = generator, dry_run
        self._gens = [generator] if isinstance(generator, torch.Generator) else list(generator)
        self.states = {0: [g.get_state() for g in self._gens]}

    def rewind(self, k: int) -> Generators:
        """The generator(s), set to where step k's noise starts."""
        last = max(self.states)
        while last < k:
            self._set(last)
            self.dry_run(last, self.generator)
            last += 1
            self.states[last] = [g.get_state() for g in self._gens]
        self._set(k)
        return self.generator

    def forget(self, k: int) -> None:
        """Drop the states before step k (the window has passed them), but the latest."""
        keep = min(k, max(self.states))
        for old in [j for j in self.states if j < keep]:
            del self.states[old]

    def _set(self, k: int) -> None:
        for g, state in zip(self._gens, self.states[k], strict=True):
            g.set_state(state)


def _check_finite(x: Tensor, k: int, ts: Tensor) -> None:
    if not torch.isfinite(x).all():
        raise SamplingError(
            f"sampler state became NaN/inf at step {k} of {len(ts) - 1} "
            f"(t={ts[k - 1].item():.4g} -> {ts[k].item():.4g}) under Picard iteration"
        )
