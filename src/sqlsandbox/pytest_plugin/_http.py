"""Fixtures for tests that call their app over HTTP: the owner header.

An app wrapped in ``sqlsandbox.http.SandboxMiddleware`` (ASGI) or
``SandboxWSGIMiddleware`` (WSGI) runs each request that carries this header
as the test's owner. See ``docs/recipes/http.md``.
"""

from __future__ import annotations

import pytest

from ._database import SandboxHandle

__all__ = ["sandbox_headers"]


@pytest.fixture
def sandbox_headers(sandbox: SandboxHandle) -> dict[str, str]:
    """The header that makes a request run as this test (``{}`` under ``isolation="database"``).

    Pass it to any HTTP client: ``httpx.get(url, headers=sandbox_headers)``,
    ``TestClient(app, headers=sandbox_headers)``. A test with a database of
    its own has no owner to join: its server reaches that database directly.
    """
    if sandbox.token is None:
        return {}
    # Imported here: runs that never use the header pay nothing for it.
    from ..http import owner_headers

    return owner_headers(sandbox.token)
