"""The sqlsandbox pytest plugin (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sandbox(isolation='transaction', mode='manual', template=None, seed=None): "
        "how sqlsandbox isolates this test's database.",
    )
