"""Database servers: where sqlsandbox creates, clones and drops databases.

One backend per engine behind :class:`Server`; :func:`connect_server` picks it
from the URL's scheme, :func:`open_server` also starts the embedded PostgreSQL
when no URL is given. Drivers are imported on first use, so importing this
package needs none of them.
"""

from __future__ import annotations

from ._base import DATABASE_PREFIX as DATABASE_PREFIX
from ._base import Server as Server
from ._base import check_owned_name as check_owned_name
from ._discovery import BUILTIN_BACKENDS as BUILTIN_BACKENDS
from ._discovery import connect_server as connect_server
from ._discovery import open_server as open_server
from ._mariadb import MariaDBServer as MariaDBServer
from ._postgres import PostgresServer as PostgresServer
from ._sqlite import SQLiteServer as SQLiteServer

__all__ = [
    "BUILTIN_BACKENDS",
    "DATABASE_PREFIX",
    "MariaDBServer",
    "PostgresServer",
    "SQLiteServer",
    "Server",
    "check_owned_name",
    "connect_server",
    "open_server",
]
