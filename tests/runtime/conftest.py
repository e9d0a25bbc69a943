"""Helpers for the runtime tests: a pytester project with the settings every run needs."""

from __future__ import annotations

import pytest

INI = """
[pytest]
asyncio_mode = {mode}
asyncio_default_fixture_loop_scope = function
{extra}
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project in strict asyncio mode (tests may rewrite pytest.ini)."""
    pytester.makeini(INI.format(mode="strict", extra=""))
    return pytester


def write_ini(pytester: pytest.Pytester, *, mode: str = "strict", extra: str = "") -> None:
    """Rewrite the project's pytest.ini."""
    pytester.makeini(INI.format(mode=mode, extra=extra))
