"""PostgreSQL backend: clones are ``CREATE DATABASE ... TEMPLATE``, administered with psycopg 3.

One autocommit admin connection per server object, opened on first use and
kept (a new connection costs ~7 ms, a statement ~0.1 ms). It is connected to
the URL's database (``postgres`` by default) and never to a template, because
PostgreSQL refuses to copy a database that has other sessions.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, cast

from .._exceptions import ConfigError, missing_extra
from .._urls import DatabaseURL
from ._base import DATABASE_PREFIX, Server, check_owned_name
from ._errors import connect_error, operation_error, wrong_backend

if TYPE_CHECKING:
    from collections.abc import Callable

    import psycopg

__all__ = ["PostgresServer"]

T = TypeVar("T")
CloneStrategy = Literal["wal_log", "file_copy"]

_SCHEMES = ("postgresql", "postgres")
_DEFAULT_DATABASE = "postgres"
_DUPLICATE_DATABASE = "42P04"
_INVALID_CATALOG_NAME = "3D000"
_OBJECT_IN_USE = "55006"
# What each kind of statement needs when the server says "permission denied".
_CREATEDB = "the CREATEDB attribute (ALTER ROLE ... CREATEDB)"
_CLONE = (
    "the CREATEDB attribute (ALTER ROLE ... CREATEDB) and ownership of the template "
    "(build and clone it as the same user)"
)
_DROP = "ownership of the database (the user that created it may drop it) or SUPERUSER"
_SIGNAL = (
    "membership in pg_signal_backend (GRANT pg_signal_backend TO ...); only a "
    "SUPERUSER may end a superuser's sessions"
)
_RUN_SQL = "the privileges on the objects the SQL uses (GRANT ... ON ...)"


def _require_psycopg() -> None:
    """Import psycopg, or explain which extra provides it."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise missing_extra("psycopg", "postgres", "Administering PostgreSQL") from None


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except Exception:  # closing at interpreter shutdown may fail; nothing to do
        pass


def _rows(cursor: psycopg.Cursor[Any]) -> list[Any]:
    return cursor.fetchall() if cursor.description is not None else []


class PostgresServer(Server):
    """A PostgreSQL server (10+; STRATEGY needs 15+, ``WITH (FORCE)`` 13+)."""

    backend: ClassVar[str] = "postgresql"
    supports_templates: ClassVar[bool] = True
    CLONE_STRATEGIES: ClassVar[tuple[str, ...]] = ("wal_log", "file_copy")

    def __init__(
        self,
        url: str | DatabaseURL,
        *,
        clone_strategy: CloneStrategy | None = None,
        connect_timeout: float = 10.0,
        clone_attempts: int = 5,
    ) -> None:
        url = DatabaseURL.parse(url)
        if url.backend not in _SCHEMES:
            raise wrong_backend(type(self).__name__, url, "postgresql://")
        _require_psycopg()
        if clone_strategy is not None and clone_strategy not in self.CLONE_STRATEGIES:
            raise ConfigError(
                f"Unknown clone_strategy {clone_strategy!r} for {url.masked()}: "
                f"use one of {', '.join(self.CLONE_STRATEGIES)} or None (the server's default)."
            )
        super().__init__(url)
        self.clone_strategy: CloneStrategy | None = clone_strategy
        self.connect_timeout = connect_timeout
        self.clone_attempts = max(1, clone_attempts)
        # Never sit on one of our own databases: it may be a template to copy.
        database = url.database or _DEFAULT_DATABASE
        self.admin_database = (
            _DEFAULT_DATABASE if database.startswith(DATABASE_PREFIX) else database
        )
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._finalizer: weakref.finalize[Any, PostgresServer] | None = None
        self._version_num: int | None = None

    # -- connections -----------------------------------------------------------

    def _connect_kwargs(self, database: str) -> dict[str, Any]:
        import psycopg

        known = {opt.keyword.decode() for opt in psycopg.pq.Conninfo.get_defaults()}
        # Parameters meant for another driver (asyncpg's ssl=, SQLAlchemy's) would make
        # libpq refuse to connect; only libpq's own keywords go through.
        kwargs: dict[str, Any] = {k: v for k, v in self.url.query if k in known}
        url = self.url
        given: dict[str, object] = {
            "host": url.host,
            "port": url.port,
            "user": url.username,
            "password": url.password,
        }
        kwargs.update({key: value for key, value in given.items() if value is not None})
        kwargs["dbname"] = database
        kwargs.setdefault("connect_timeout", max(1, round(self.connect_timeout)))
        kwargs.setdefault("application_name", "sqlsandbox")
        return kwargs

    def _open(self, database: str) -> psycopg.Connection[Any]:
        """Open an autocommit connection to *database*, or raise ProvisioningError."""
        import psycopg

        try:
            conn = psycopg.connect(autocommit=True, **self._connect_kwargs(database))
        except psycopg.Error as exc:
            raise connect_error("PostgreSQL", self.url.with_database(database), exc) from None
        self._version_num = conn.info.server_version
        return conn

    def _run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Call *fn* with the admin connection; reopen it once if it broke."""
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                conn = self._conn
                if conn is None or conn.closed:
                    conn = self._conn = self._open(self.admin_database)
                    if self._finalizer is not None:
                        self._finalizer.detach()
                    # A server object that is dropped without close() must not leak
                    # its connection (psycopg would warn with a ResourceWarning).
                    self._finalizer = weakref.finalize(self, _close_quietly, conn)
                try:
                    return fn(conn)
                except psycopg.OperationalError:
                    # The server restarted or dropped us: the statement never ran.
                    if attempt == 1 and conn.broken:
                        self._conn = None
                        continue
                    raise
            raise AssertionError("unreachable")  # pragma: no cover

    def _call(
        self,
        action: str,
        fn: Callable[[psycopg.Connection[Any]], T],
        fixes: dict[str, str] | None = None,
        *,
        privilege: str = "",
    ) -> T:
        """Run *fn* on the admin connection; turn driver errors into ProvisioningError.

        *fixes* maps a SQLSTATE to the advice that goes with it; other errors get
        a fix by cause, naming *privilege* when the server refused it.
        """
        import psycopg

        try:
            return self._run(fn)
        except psycopg.Error as exc:
            fix = (fixes or {}).get(exc.sqlstate or "", "")
            raise operation_error(action, self.url, exc, fix, privilege=privilege) from None

    def close(self) -> None:
        """Close the admin connection (it reopens on the next call)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if conn is not None:
            _close_quietly(conn)

    # -- facts -------------------------------------------------------------------

    def version(self) -> str:
        """Return ``server_version``, for example ``"15.20 (Debian 15.20-0+deb12u1)"``."""
        rows = self._call(
            "read the server version", lambda c: _rows(c.execute("SHOW server_version"))
        )
        return str(rows[0][0])

    def version_info(self) -> tuple[int, ...]:
        """Return the version as numbers: ``(15, 20)``, or ``(9, 6, 24)`` before 10."""
        if self._version_num is None:
            self._run(lambda c: None)
        num = cast(int, self._version_num)
        if num >= 100000:
            return (num // 10000, num % 10000)
        return (num // 10000, num // 100 % 100, num % 100)

    def max_connections(self) -> int:
        """Return the server's ``max_connections``."""
        rows = self._call(
            "read max_connections", lambda c: _rows(c.execute("SHOW max_connections"))
        )
        return int(rows[0][0])

    def connections_in_use(self) -> int:
        """Return how many client sessions are open on the server (ours included)."""
        query = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        rows = self._call("count connections", lambda c: _rows(c.execute(query)))
        return int(rows[0][0])

    # -- databases ---------------------------------------------------------------

    def list_databases(self, prefix: str = DATABASE_PREFIX) -> list[str]:
        """Return the databases whose names start with *prefix*, sorted."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = "SELECT datname FROM pg_database WHERE datname LIKE %s ESCAPE '\\' ORDER BY datname"
        rows = self._call("list databases", lambda c: _rows(c.execute(query, (pattern,))))
        return [row[0] for row in rows]

    def database_exists(self, name: str) -> bool:
        """Return whether database *name* exists."""
        query = "SELECT 1 FROM pg_database WHERE datname = %s"
        return bool(self._call("look up a database", lambda c: _rows(c.execute(query, (name,)))))

    def _create(self, name: str) -> None:
        from psycopg import sql

        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        self._call(
            f"create database {name!r}",
            lambda c: c.execute(statement),
            {_DUPLICATE_DATABASE: "Drop it first or use a new name."},
            privilege=_CREATEDB,
        )

    def _clone_statement(self, name: str, template: str) -> Any:
        from psycopg import sql

        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
        if self.clone_strategy is None:
            return statement
        if self.version_info() < (15,):
            raise ConfigError(
                f"clone_strategy={self.clone_strategy!r} needs PostgreSQL 15 or later, but "
                f"{self.url.masked()} runs {'.'.join(map(str, self.version_info()))}. "
                "Use clone_strategy=None."
            )
        return statement + sql.SQL(" STRATEGY {}").format(sql.SQL(self.clone_strategy.upper()))

    def _clone(self, name: str, template: str) -> None:
        import psycopg

        statement = self._clone_statement(name, template)

        def clone(conn: psycopg.Connection[Any]) -> None:
            for attempt in range(1, self.clone_attempts + 1):
                # PostgreSQL waits 5 s before it refuses to copy a template that has
                # sessions; the template is ours, so whoever sits on it goes first.
                self._terminate(conn, template)
                try:
                    conn.execute(statement)
                    return
                except psycopg.errors.ObjectInUse:
                    if attempt == self.clone_attempts:
                        raise

        self._call(
            f"clone database {template!r} into {name!r}",
            clone,
            {
                _DUPLICATE_DATABASE: "Drop it first or use a new name.",
                _INVALID_CATALOG_NAME: "Build the template before cloning it.",
                _OBJECT_IN_USE: (
                    f"Sessions kept connecting to the template {template!r} through "
                    f"{self.clone_attempts} attempts; nothing may stay connected to a template."
                ),
            },
            privilege=_CLONE,
        )

    def _drop(self, name: str, *, missing_ok: bool) -> None:
        import psycopg
        from psycopg import sql

        if_exists = sql.SQL("IF EXISTS ") if missing_ok else sql.SQL("")
        if self.version_info() >= (13,):
            statement = sql.SQL("DROP DATABASE {}{} WITH (FORCE)").format(
                if_exists, sql.Identifier(name)
            )

            def drop(conn: psycopg.Connection[Any]) -> None:
                conn.execute(statement)

        else:
            statement = sql.SQL("DROP DATABASE {}{}").format(if_exists, sql.Identifier(name))

            def drop(conn: psycopg.Connection[Any]) -> None:
                for attempt in range(1, self.clone_attempts + 1):
                    self._terminate(conn, name)
                    try:
                        conn.execute(statement)
                        return
                    except psycopg.errors.ObjectInUse:
                        if attempt == self.clone_attempts:
                            raise

        self._call(
            f"drop database {name!r}",
            drop,
            {_INVALID_CATALOG_NAME: "Pass missing_ok=True to ignore a missing database."},
            privilege=_DROP,
        )

    def terminate_connections(self, name: str) -> int:
        """Close every other session on database *name* (ours only); return how many."""
        check_owned_name(name)
        return self._call(
            f"terminate connections to {name!r}",
            lambda c: self._terminate(c, name),
            privilege=_SIGNAL,
        )

    def _terminate(self, conn: psycopg.Connection[Any], name: str) -> int:
        # From PostgreSQL 14 the server waits (up to 5 s) until each backend is gone,
        # so a following CREATE/DROP DATABASE does not see it.
        call = (
            "pg_terminate_backend(pid, 5000)"
            if self._version_num and self._version_num >= 140000
            else "pg_terminate_backend(pid)"
        )
        query = (
            f"SELECT count(*) FILTER (WHERE {call}) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()"
        )
        rows = _rows(conn.execute(cast(Any, query), (name,)))
        return int(rows[0][0])

    def execute(self, sql: str, params: Any = None, *, database: str | None = None) -> list[Any]:
        """Run *sql* (with ``%s`` placeholders) and return its rows, if any.

        Without *database* (or naming the admin database) it runs on the admin
        connection; otherwise on a short-lived connection to *database*.
        """
        query = cast(Any, sql)
        if database is None or database == self.admin_database:
            return self._call(
                "run SQL", lambda c: _rows(c.execute(query, params)), privilege=_RUN_SQL
            )
        import psycopg

        conn = self._open(database)
        try:
            return _rows(conn.execute(query, params))
        except psycopg.Error as exc:
            raise operation_error(
                f"run SQL in database {database!r}", self.url, exc, privilege=_RUN_SQL
            ) from None
        finally:
            conn.close()
