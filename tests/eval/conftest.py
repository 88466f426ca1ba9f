"""Shared fixtures for the evaluation tests."""

import importlib
import importlib.util
import sys
import types

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every module here runs single-threaded (``one_thread``, tests/conftest.py)."""


def _missing(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.fail(
            f"the reference FID library {package} is missing: run `make setup` (it installs "
            "torchmetrics and, with --no-deps, torch-fidelity==0.4.0)"
        )


def _reference_modules() -> list[str]:
    return [k for k in sys.modules if k.split(".")[0] in ("torch_fidelity", "torchmetrics")]


@pytest.fixture(scope="session")
def torch_fidelity():
    """torch-fidelity's Inception-v3 modules, imported without torchvision: a namespace with
    ``inception`` (``feature_extractor_inceptionv3``) and ``interpolate``
    (``interpolate_compat_tensorflow``).

    torch-fidelity's package ``__init__`` imports torchvision for its other extractors, and
    torchvision does not import beside this torch build. Its Inception-v3 modules need only
    torch, so the package is registered bare (its ``__init__`` not run) and only they are
    imported. ``make setup`` installs it with ``--no-deps``; missing, it is an error, not a
    skip. Everything imported from it (and from torchmetrics) is removed after the session.
    """
    _missing("torch_fidelity")
    saved = {k: sys.modules.pop(k) for k in _reference_modules()}
    package = types.ModuleType("torch_fidelity")
    package.__path__ = list(importlib.util.find_spec("torch_fidelity").submodule_search_locations)
    sys.modules["torch_fidelity"] = package
    try:
        yield types.SimpleNamespace(
            inception=importlib.import_module("torch_fidelity.feature_extractor_inceptionv3"),
            interpolate=importlib.import_module("torch_fidelity.interpolate_compat_tensorflow"),
        )
    finally:
        for name in _reference_modules():
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.fixture(scope="session")
def torchmetrics_fid(torch_fidelity):
    """``torchmetrics.image.fid``: its FID math, and its ``FrechetInceptionDistance`` on
    torch-fidelity's network (imported through the bare package of ``torch_fidelity``)."""
    _missing("torchmetrics")
    return importlib.import_module("torchmetrics.image.fid")
