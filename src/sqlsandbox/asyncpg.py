"""Route an app's direct use of asyncpg through a sandbox.

::

    import sqlsandbox.asyncpg
    from sqlsandbox import Sandbox

    sandbox = Sandbox(test_database_url)
    sqlsandbox.asyncpg.install(sandbox)      # before or after the app imports asyncpg
    async with await sandbox.acheckout():
        pool = await asyncpg.create_pool(test_database_url)   # the app's own code
        async with pool.acquire() as conn:                     # the owner's connection
            async with conn.transaction():                     # a savepoint
                await conn.execute("INSERT ...")
    # everything the app wrote is rolled back

``asyncpg.connect()`` and ``asyncpg.create_pool()`` aimed at the routed
database return proxies of the calling code's owner connection; calls for
other databases reach asyncpg untouched. See ``docs/drivers.md``.
"""

from __future__ import annotations

from ._exceptions import missing_extra

try:
    import asyncpg as _asyncpg  # type: ignore[import-untyped,unused-ignore]  # noqa: F401 - to report a missing extra
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("asyncpg", "asyncpg", "Routing asyncpg connections") from exc

from .drivers._asyncpg import (
    SandboxConnection,
    SandboxPool,
    SandboxTransaction,
    install,
    is_installed,
    uninstall,
)

__all__ = [
    "SandboxConnection",
    "SandboxPool",
    "SandboxTransaction",
    "install",
    "is_installed",
    "uninstall",
]
