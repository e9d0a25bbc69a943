"""Route an app's direct use of PyMySQL and aiomysql through a sandbox.

::

    import sqlsandbox.mysql
    from sqlsandbox import Sandbox

    sandbox = Sandbox("mysql://root@127.0.0.1:3306/sqlsandbox_test_db")
    sqlsandbox.mysql.install(sandbox)
    with sandbox.checkout():
        conn = pymysql.connect(host="127.0.0.1", user="root", database="sqlsandbox_test_db")
        with conn.cursor() as cur:                      # the owner's connection
            cur.execute("INSERT ...")
        conn.commit()                                   # a savepoint release
    # everything the app wrote is rolled back

``pymysql.connect()``, ``aiomysql.connect()`` and ``aiomysql.create_pool()``
aimed at the routed database hand out proxies of the calling code's owner
connection; other databases are untouched. Statements MariaDB/MySQL would
commit implicitly (DDL) are refused. See ``docs/drivers.md``.
"""

from __future__ import annotations

from ._exceptions import missing_extra

try:
    import pymysql as _pymysql  # noqa: F401 - only to report a missing extra clearly
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("pymysql", "mysql", "Routing PyMySQL and aiomysql connections") from exc

from .drivers._aiomysql import AsyncSandboxConnection, SandboxPool
from .drivers._mysql import install, is_installed, uninstall
from .drivers._pymysql import SandboxConnection

__all__ = [
    "AsyncSandboxConnection",
    "SandboxConnection",
    "SandboxPool",
    "install",
    "is_installed",
    "uninstall",
]
