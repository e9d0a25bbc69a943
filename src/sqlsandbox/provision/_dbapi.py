"""Plain DBAPI connections for the few things the server layer does not do.

The provisioner needs a connection that stays open (the registry, a
server-side lock) and runs scripts in one database (SQL migrations, sequence
repair). Each backend uses the driver of its extra: psycopg for PostgreSQL,
PyMySQL for MariaDB, the standard library for SQLite.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigError, missing_extra
from ..servers._errors import connect_error

if TYPE_CHECKING:
    from .._urls import DatabaseURL

__all__ = ["connect", "is_connection_error", "run_script"]


def connect(url: DatabaseURL, *, autocommit: bool = True, threadsafe: bool = False) -> Any:
    """Open a DBAPI connection to the database of *url* with its backend's driver.

    With *threadsafe* the connection may be used from several threads (the
    caller serialises access); only SQLite needs to be told.
    """
    backend = url.backend
    if backend in ("postgresql", "postgres"):
        return _connect_postgres(url, autocommit=autocommit)
    if backend in ("mysql", "mariadb"):
        return _connect_mysql(url, autocommit=autocommit)
    if backend == "sqlite":
        return _connect_sqlite(url, autocommit=autocommit, threadsafe=threadsafe)
    raise ConfigError(
        f"Unsupported database URL scheme {url.scheme!r} in {url.masked()}: "
        "use postgresql://, mysql:// (MariaDB) or sqlite:///."
    )


def _connect_postgres(url: DatabaseURL, *, autocommit: bool) -> Any:
    try:
        import psycopg
    except ImportError:
        raise missing_extra("psycopg", "postgres", "Provisioning on PostgreSQL") from None
    # Parameters meant for another driver (asyncpg's ssl=, SQLAlchemy's) would
    # make libpq refuse to connect; only libpq's own keywords go through.
    known = {opt.keyword.decode() for opt in psycopg.pq.Conninfo.get_defaults()}
    params: dict[str, Any] = {k: v for k, v in url.query if k in known}
    if url.host is not None:
        params.setdefault("host", url.host)
    if url.port is not None:
        params["port"] = url.port
    if url.username is not None:
        params["user"] = url.username
    if url.password is not None:
        params["password"] = url.password
    params["dbname"] = url.database or "postgres"
    params.setdefault("connect_timeout", 10)
    params.setdefault("application_name", "sqlsandbox")
    try:
        return psycopg.connect(autocommit=autocommit, **params)
    except psycopg.Error as exc:
        raise connect_error("PostgreSQL", url, exc) from None


def _connect_mysql(url: DatabaseURL, *, autocommit: bool) -> Any:
    try:
        import pymysql
        from pymysql.constants import CLIENT
    except ImportError:
        raise missing_extra("pymysql", "mysql", "Provisioning on MariaDB") from None
    params: dict[str, Any] = {
        "host": url.host or "localhost",
        "port": url.port or 3306,
        "user": url.username or "root",
        "password": url.password or "",
        "autocommit": autocommit,
        "charset": url.query_value("charset") or "utf8mb4",
        "client_flag": CLIENT.MULTI_STATEMENTS,
        "connect_timeout": 10,
    }
    if url.database:
        params["database"] = url.database
    socket = url.query_value("unix_socket") or url.query_value("host")
    if socket:
        params["unix_socket"] = socket
    try:
        return pymysql.connect(**params)
    except pymysql.Error as exc:
        raise connect_error("MariaDB", url, exc) from None


def _connect_sqlite(url: DatabaseURL, *, autocommit: bool, threadsafe: bool) -> Any:
    path = url.database or ":memory:"
    # isolation_level=None leaves transactions to the SQL we send (BEGIN/COMMIT).
    conn = sqlite3.connect(
        path,
        timeout=60.0,
        isolation_level=None if autocommit else "DEFERRED",
        check_same_thread=not threadsafe,
    )
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def run_script(conn: Any, backend: str, sql: str) -> None:
    """Run a whole SQL script (several statements) on *conn*, raising the first error."""
    if backend == "sqlite":
        conn.executescript(sql)
        return
    cur = conn.cursor()
    try:
        cur.execute(sql)
        if backend in ("mysql", "mariadb"):
            # With MULTI_STATEMENTS an error in a later statement surfaces only
            # when its result is fetched.
            while cur.nextset():
                pass
    finally:
        cur.close()


def is_connection_error(conn: Any, exc: BaseException) -> bool:
    """Return whether *exc* on *conn* means the connection is gone (worth one reconnect).

    A server restart or ``pg_terminate_backend`` kills long-lived connections
    such as the registry's; the statement never ran, so running it again on a
    new connection is safe.
    """
    if getattr(conn, "broken", False) or getattr(conn, "closed", False) is True:
        return True  # psycopg
    if getattr(conn, "open", True) is False:
        return True  # PyMySQL
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"OperationalError", "InterfaceError"}:
        text = str(exc).lower()
        return any(
            word in text
            for word in ("closed", "terminat", "lost connection", "gone away", "broken", "eof")
        )
    return False
