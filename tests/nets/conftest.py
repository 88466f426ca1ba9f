"""Shared fixtures for the network tests."""

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run the tiny test nets single-threaded: per-op overhead dominates at these sizes, and
    two OpenMP threads on two busy cores can be 50x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
