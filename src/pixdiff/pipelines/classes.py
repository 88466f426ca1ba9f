"""Class requests: class names or ids, one for every sample, one per sample, or "all", checked
against the classes a model (or a guiding classifier) knows."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

ClassRequest = int | str | Sequence[int | str] | Tensor | None


def class_names(model, classifier=None) -> list[str]:
    """The class names to pick from: the model's, else a guiding classifier's, else none."""
    if model.num_classes:
        return model.class_names or [str(i) for i in range(model.num_classes)]
    if classifier is not None:
        return classifier.class_names or [str(i) for i in range(classifier.num_classes)]
    return []


def class_ids(classes: ClassRequest, names: list[str], n: int, *, flag: str = "--class") -> Tensor:
    """(n,) int64 ids of ``classes``: "all" cycles through ``names``; one name or id is used
    for every sample; a sequence or tensor gives one per sample."""
    if isinstance(classes, str) and classes == "all" and flag == "--class":
        return torch.arange(n) % len(names)
    if isinstance(classes, (str, int)):
        return torch.full((n,), _class_id(classes, names, flag))
    if isinstance(classes, Tensor):
        ids = classes.to(torch.long)
    else:
        ids = torch.tensor([_class_id(c, names, flag) for c in classes], dtype=torch.long)
    if ids.shape != (n,):
        raise ValueError(f"need {n} labels, got shape {tuple(ids.shape)}")
    _check_ids(ids, len(names), flag)
    return ids


def _check_ids(ids: Tensor, k: int, flag: str) -> None:
    if bool(((ids < 0) | (ids >= k)).any()):
        what = flag.removeprefix("--").replace("-", " ")
        raise ValueError(f"{what} ids must be in [0, {k - 1}], got {ids.tolist()}")


def _class_id(value: int | str, names: list[str], flag: str) -> int:
    """A class name (case-insensitive) or id -> its id."""
    if isinstance(value, int):
        _check_ids(torch.tensor([value]), len(names), flag)
        return value
    text = str(value)
    lookup = {name.lower(): i for i, name in enumerate(names)}
    if text.lower() in lookup:
        return lookup[text.lower()]
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise ValueError(
        f"unknown class {text!r} for {flag}; valid: {names} or ids 0..{len(names) - 1}"
        + (", or 'all'" if flag == "--class" else "")
    )
