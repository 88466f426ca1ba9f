"""Shared fixtures for the network tests."""

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every module here runs single-threaded (``one_thread``, tests/conftest.py)."""


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _perturb(net: nn.Module, std: float = 0.05) -> nn.Module:
    """Add noise to every parameter, so zero-initialised branches carry signal."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen))
    return net.eval()


@pytest.fixture
def perturb():
    """``perturb(net, std=0.05)``: randomise all weights (zero-init included), return net."""
    return _perturb
