"""Route an app's direct use of psycopg 3 (and psycopg_pool) through a sandbox.

::

    import sqlsandbox.psycopg
    from sqlsandbox import Sandbox

    sandbox = Sandbox(test_database_url)
    sqlsandbox.psycopg.install(sandbox)
    with sandbox.checkout():
        with psycopg.connect(test_database_url) as conn:   # the owner's connection
            conn.execute("INSERT ...")
            conn.commit()                                   # a savepoint release
    # everything the app wrote is rolled back

``psycopg.connect()``, ``psycopg.AsyncConnection.connect()`` and the
``ConnectionPool`` / ``AsyncConnectionPool`` of psycopg_pool aimed at the
routed database hand out proxies of the calling code's owner connection;
other databases are untouched. See ``docs/drivers.md``.
"""

from __future__ import annotations

from ._exceptions import missing_extra

try:
    import psycopg as _psycopg  # noqa: F401 - only to report a missing extra clearly
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("psycopg", "postgres", "Routing psycopg connections") from exc

from .drivers._psycopg import SandboxConnection, install, is_installed, uninstall
from .drivers._psycopg_async import AsyncSandboxConnection

__all__ = [
    "AsyncSandboxConnection",
    "SandboxConnection",
    "install",
    "is_installed",
    "uninstall",
]
