"""Where a training run's numbers go, behind one small interface (:class:`Logger`): log.csv and
eval.csv (always), one line on stdout every ``run.log_every`` steps when no progress bar is
drawn there, and TensorBoard event files in RUN/tensorboard (``run.logger="tensorboard"``).

Scalars are tagged ``group/name``: ``train/loss``, ``train/lr``, ``train/grad_norm``,
``train/img_per_s``, ``train/elapsed_s`` (and ``train/phase`` when distilling), ``eval/fd``,
``eval/kid``, ... Another tracker (wandb, MLflow) plugs in as one more class with the three
methods of :class:`Logger`, built by :func:`open_loggers` for its ``run.logger`` name. Nothing
here draws a random number, so logging never changes what a run trains.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from torch import Tensor

from pixdiff.config import RunConfig
from pixdiff.data import from_model_space
from pixdiff.eval.report import EVAL_FIELDS
from pixdiff.rundir import append_row, start_log

TENSORBOARD_DIR = "tensorboard"  # inside the run directory
# how log.csv has always written each field; any other value (eval.csv's) is written ".6g"
FORMATS = {
    "phase": "d", "loss": ".6f", "lr": ".3e", "img_per_s": ".1f", "grad_norm": ".4f",
    "elapsed_s": ".1f",
}  # fmt: skip


class Logger(Protocol):
    """What a training loop records, and where: three methods, so other trackers plug in."""

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record ``scalars`` ({"train/loss": 0.03, ...}) at optimizer step ``step``."""

    def log_images(self, step: int, name: str, grid: Tensor) -> None:
        """Record an image grid (C, H, W) in [-1, 1] under ``name`` at ``step``."""

    def close(self) -> None:
        """Flush and release what the logger holds (files, writer threads)."""


def _format(group: str, name: str, value: float) -> str:
    spec = FORMATS.get(name, ".6g") if group == "train" else ".6g"
    return f"{int(value) if spec == 'd' else value:{spec}}"


def _groups(scalars: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """{"train/loss": 1, "eval/fd": 2} -> {"train": {"loss": 1}, "eval": {"fd": 2}}."""
    groups: dict[str, dict[str, float]] = {}
    for tag, value in scalars.items():
        group, _, name = tag.partition("/")
        groups.setdefault(group, {})[name] = value
    return groups


class CSVLog:
    """A CSV log with one row per logged step (log.csv, eval.csv), each appended by one
    write(); on resume, rows past the checkpoint are dropped and a damaged log is set aside
    (:func:`pixdiff.rundir.start_log`)."""

    FIELDS = ["step", "loss", "lr", "img_per_s", "grad_norm", "elapsed_s"]

    def __init__(self, path: Path, resume_step: int | None, fields: list[str] | None = None):
        self.path = path
        self.FIELDS = fields or self.FIELDS
        start_log(path, self.FIELDS, resume_step)

    def write(self, **row) -> None:
        append_row(self.path, self.FIELDS, row)


class CSVLogger:
    """The run's CSV files as a :class:`Logger`: each tag group ("train", "eval") is one row of
    its file (log.csv, eval.csv); images are the PNG grids the trainer saves itself."""

    def __init__(self, logs: dict[str, CSVLog]):
        self.logs = logs

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for group, row in _groups(scalars).items():
            if group in self.logs:
                self.logs[group].write(
                    step=step, **{k: _format(group, k, v) for k, v in row.items()}
                )

    def log_images(self, step: int, name: str, grid: Tensor) -> None:
        pass

    def close(self) -> None:
        pass


class StdoutLogger:
    """One line per tag group on stdout, ``key=value`` so that it greps and splits, e.g.
    ``train step=200/1000 images=12800 loss=0.034512 lr=1.000e-04 grad_norm=0.4120
    img_per_s=812.3 elapsed_s=15.8`` (images: optimizer steps x the global batch)."""

    def __init__(self, label: str, steps: int, batch_size: int):
        self.label, self.steps, self.batch_size = label, steps, batch_size

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for group, row in _groups(scalars).items():
            head = f"{self.label if group == 'train' else group} step={step}/{self.steps}"
            if group == "train":
                head += f" images={step * self.batch_size}"
            values = " ".join(f"{k}={_format(group, k, v)}" for k, v in row.items())
            print(f"{head} {values}", flush=True)

    def log_images(self, step: int, name: str, grid: Tensor) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """TensorBoard event files in ``log_dir`` (torch.utils.tensorboard, needs ``tensorboard``).
    A resumed run appends a new event file whose purge step makes TensorBoard drop what the
    last session logged after the checkpoint, as log.csv drops those rows."""

    def __init__(self, log_dir: Path, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step else None  # steps >= purge: the last session's
        self.writer = SummaryWriter(str(log_dir), purge_step=purge)

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def log_images(self, step: int, name: str, grid: Tensor) -> None:
        self.writer.add_image(name, from_model_space(grid.detach().cpu()), step, dataformats="CHW")

    def close(self) -> None:
        self.writer.close()


class Loggers:
    """Several loggers as one, closed on leaving a ``with`` block (an error included)."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for logger in self.loggers:
            logger.log_scalars(step, scalars)

    def log_images(self, step: int, name: str, grid: Tensor) -> None:
        for logger in self.loggers:
            logger.log_images(step, name, grid)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()

    def __enter__(self) -> Loggers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def require_logger(name: str) -> None:
    """One line naming what to install when logger ``name`` cannot run; call it before the run
    directory is touched."""
    if name == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ValueError(
                "--logger tensorboard (run.logger) needs the tensorboard package: "
                "pip install tensorboard (or pip install 'pixdiff[tensorboard]')"
            ) from None


def lines_on_stdout(progress: bool) -> bool:
    """Whether the one-line log goes to stdout: when no progress bar is asked for, or stdout
    is no terminal (a file, a pipe, a job's log)."""
    return not (progress and sys.stdout.isatty())


def open_loggers(
    run: RunConfig,
    out: Path,
    resume_step: int,
    *,
    batch_size: int,
    progress: bool,
    label: str = "train",
    fields: list[str] | None = None,
    eval_log: bool = False,
    main: bool = True,
) -> tuple[Loggers, StepMeter]:
    """The loggers of the run in ``out`` from ``resume_step`` (none but on the ``main``
    process), and the meter that feeds them every ``run.log_every`` steps: log.csv with
    ``fields`` (and eval.csv when ``eval_log``), the stdout lines headed ``label`` unless a
    progress bar is drawn there (:func:`lines_on_stdout`), and ``run.logger``'s own
    ("tensorboard": RUN/tensorboard)."""
    loggers: list[Logger] = []
    if main:
        logs = {"train": CSVLog(out / "log.csv", resume_step, fields)}
        if eval_log:
            logs["eval"] = CSVLog(out / "eval.csv", resume_step, ["step", *EVAL_FIELDS])
        loggers.append(CSVLogger(logs))
        if lines_on_stdout(progress):
            loggers.append(StdoutLogger(label, run.steps, batch_size))
        if run.logger == "tensorboard":
            loggers.append(TensorBoardLogger(out / TENSORBOARD_DIR, resume_step))
    fan_out = Loggers(loggers)
    meter = StepMeter(fan_out, every=run.log_every, last=run.steps, batch_size=batch_size)
    return fan_out, meter


class StepMeter:
    """Every ``every`` optimizer steps and at step ``last``: the given scalars, the images per
    second since the last log and the seconds since the meter started, as ``train/*`` tags."""

    def __init__(self, logger: Logger, *, every: int, last: int, batch_size: int):
        self.logger, self.every, self.last, self.batch_size = logger, every, last, batch_size
        self.start = self.since = time.time()
        self.images = 0

    def update(self, step: int, **scalars: float) -> None:
        """Count one optimizer step (now at ``step``); log if it is time."""
        self.images += self.batch_size
        if step % self.every and step != self.last:
            return
        now = time.time()
        scalars |= {"img_per_s": self.images / max(now - self.since, 1e-9)}
        scalars |= {"elapsed_s": now - self.start}
        self.logger.log_scalars(step, {f"train/{k}": v for k, v in scalars.items()})
        self.since, self.images = now, 0
