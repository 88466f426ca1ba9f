"""Shared fixtures for the export / import tests."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every module here runs single-threaded (``one_thread``, tests/conftest.py)."""
