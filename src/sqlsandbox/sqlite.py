"""Route an app's direct use of sqlite3 and aiosqlite through a sandbox.

::

    import sqlsandbox.sqlite
    from sqlsandbox import Sandbox

    sandbox = Sandbox("sqlite:///path/to/test.sqlite3")
    sqlsandbox.sqlite.install(sandbox)
    with sandbox.checkout():
        conn = sqlite3.connect("path/to/test.sqlite3")   # the owner's connection
        with conn:                                         # a savepoint
            conn.execute("INSERT ...")
    # everything the app wrote is rolled back

``sqlite3.connect()`` and ``aiosqlite.connect()`` of the routed file (compared
by real path) return proxies of the calling code's owner connection; other
files and in-memory databases are untouched. See ``docs/drivers.md``.
"""

from __future__ import annotations

from .drivers._sqlite import SandboxConnection, install, is_installed, uninstall

__all__ = ["SandboxConnection", "install", "is_installed", "uninstall"]
