"""MariaDB/MySQL backend, administered with PyMySQL.

MariaDB has no template databases, so a clone is a copy made on the server:
``SHOW CREATE`` of every table (``CREATE TABLE LIKE`` would lose foreign keys),
then rows with ``INSERT ... SELECT``, then routines, views and triggers (after
the rows, so copying does not fire them). Everything travels as three
multi-statement batches on one persistent admin connection.
"""

from __future__ import annotations

import re
import threading
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .._exceptions import missing_extra
from .._urls import DatabaseURL
from ._base import DATABASE_PREFIX, Server, check_owned_name
from ._errors import connect_error, operation_error, wrong_backend

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["MariaDBServer"]

T = TypeVar("T")
Connection = Any  # pymysql.connections.Connection: PyMySQL ships no type information

_SCHEMES = ("mysql", "mariadb")
# Client error codes meaning the connection is gone and the statement never ran.
_CONNECTION_LOST = {0, 2006, 2013, 2055}
_DB_EXISTS = 1007
_DB_MISSING = 1008
_DB_UNKNOWN = 1049
_UNKNOWN_THREAD = 1094
# What each kind of statement needs when the server says "access denied".
_DATABASES = (
    "all privileges on the databases sqlsandbox names (GRANT ALL ON `sqlsandbox\\_%`.* "
    "TO ...), or an admin user such as root"
)
_KILL = "CONNECTION ADMIN (MariaDB 10.5+) or SUPER, to end other users' sessions"
_RUN_SQL = "the privileges on the objects the SQL uses (GRANT ... ON ...)"
_REFERENCES = re.compile(r"REFERENCES `((?:[^`]|``)+)` \(")


def _require_pymysql() -> None:
    """Import PyMySQL, or explain which extra provides it."""
    try:
        import pymysql  # noqa: F401
    except ImportError:
        raise missing_extra("pymysql", "mysql", "Administering MariaDB/MySQL") from None


def _quote(name: str) -> str:
    """Quote an identifier with backticks."""
    return "`" + name.replace("`", "``") + "`"


def _close_quietly(conn: Connection) -> None:
    try:
        conn.close()
    except Exception:  # closing a dead socket may fail; nothing to do
        pass


def _results(cursor: Any) -> list[list[Any]]:
    """Return the rows of every result of a multi-statement batch."""
    out = [list(cursor.fetchall())]
    while cursor.nextset():
        out.append(list(cursor.fetchall()))
    return out


def _body(row: Any) -> str:
    """Return the CREATE statement of a SHOW CREATE PROCEDURE/FUNCTION/TRIGGER row."""
    if row[2] is None:
        # The server hides the body from users without privileges on the routine.
        raise _hidden_definition(row[0])
    return str(row[2])


def _hidden_definition(name: str) -> Exception:
    import pymysql

    error: Exception = pymysql.err.OperationalError(
        1227, f"the definition of {name!r} is hidden from this user (needs SELECT on mysql.proc)"
    )
    return error


def _fk_order(tables: list[str], creates: dict[str, str]) -> list[str]:
    """Order *tables* so that referenced tables come before those that reference them."""
    deps = {
        table: {ref.replace("``", "`") for ref in _REFERENCES.findall(creates[table])}
        & set(tables) - {table}
        for table in tables
    }
    ordered: list[str] = []
    done: set[str] = set()

    def visit(table: str, path: set[str]) -> None:
        if table in done or table in path:  # a cycle: foreign key checks are off anyway
            return
        path.add(table)
        for dep in sorted(deps[table]):
            visit(dep, path)
        path.discard(table)
        done.add(table)
        ordered.append(table)

    for table in sorted(tables):
        visit(table, set())
    return ordered


def _view_order(views: list[str], creates: dict[str, str]) -> list[str]:
    """Order *views* so that a view comes after the views it selects from."""
    deps = {
        view: {other for other in views if other != view and f"{_quote(other)}" in creates[view]}
        for view in views
    }
    ordered: list[str] = []
    done: set[str] = set()

    def visit(view: str, path: set[str]) -> None:
        if view in done or view in path:
            return
        path.add(view)
        for dep in sorted(deps[view]):
            visit(dep, path)
        done.add(view)
        ordered.append(view)

    for view in sorted(views):
        visit(view, set())
    return ordered


class MariaDBServer(Server):
    """A MariaDB (10.3+) or MySQL server; clones copy structure and rows."""

    backend: ClassVar[str] = "mariadb"
    supports_templates: ClassVar[bool] = False

    def __init__(self, url: str | DatabaseURL, *, connect_timeout: float = 10.0) -> None:
        url = DatabaseURL.parse(url)
        if url.backend not in _SCHEMES:
            raise wrong_backend(type(self).__name__, url, "mysql:// or mariadb://")
        _require_pymysql()
        super().__init__(url)
        self.connect_timeout = connect_timeout
        database = url.database
        self.admin_database = (
            None if database is None or database.startswith(DATABASE_PREFIX) else database
        )
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._finalizer: weakref.finalize[Any, MariaDBServer] | None = None

    # -- connections -----------------------------------------------------------

    def _open(self, database: str | None, *, multi: bool = False) -> Connection:
        """Open an autocommit connection, or raise ProvisioningError."""
        import pymysql
        from pymysql.constants import CLIENT

        url = self.url
        socket = url.query_value("unix_socket") or url.query_value("host")
        kwargs: dict[str, Any] = {
            "host": url.host or "localhost",
            "port": url.port or 3306,
            "user": url.username or "root",
            "password": url.password or "",
            "database": database,
            "charset": url.query_value("charset") or "utf8mb4",
            "autocommit": True,
            "connect_timeout": self.connect_timeout,
            "client_flag": CLIENT.MULTI_STATEMENTS if multi else 0,
        }
        if socket:
            kwargs["unix_socket"] = socket
        try:
            return pymysql.connect(**kwargs)
        except pymysql.Error as exc:
            raise connect_error("MariaDB", url.with_database(database), exc) from None

    def _run(self, fn: Callable[[Connection], T]) -> T:
        """Call *fn* with the admin connection; reopen it once if it was lost."""
        import pymysql

        with self._lock:
            for attempt in (1, 2):
                conn = self._conn
                if conn is None or not conn.open:
                    conn = self._conn = self._open(self.admin_database, multi=True)
                    if self._finalizer is not None:
                        self._finalizer.detach()
                    # A server dropped without close() must not leak its socket.
                    self._finalizer = weakref.finalize(self, _close_quietly, conn)
                try:
                    return fn(conn)
                except (pymysql.OperationalError, pymysql.InterfaceError) as exc:
                    code = exc.args[0] if exc.args else 0
                    if attempt == 1 and code in _CONNECTION_LOST:
                        _close_quietly(conn)
                        self._conn = None
                        continue
                    raise
            raise AssertionError("unreachable")  # pragma: no cover

    def _call(
        self,
        action: str,
        fn: Callable[[Connection], T],
        fixes: dict[int, str] | None = None,
        *,
        privilege: str = "",
    ) -> T:
        """Run *fn* on the admin connection; turn driver errors into ProvisioningError.

        *fixes* maps an error code to the advice that goes with it; other errors
        get a fix by cause, naming *privilege* when the server refused it.
        """
        import pymysql

        try:
            return self._run(fn)
        except pymysql.Error as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
            fix = (fixes or {}).get(code, "")
            raise operation_error(action, self.url, exc, fix, privilege=privilege) from None

    def _query(
        self, action: str, sql: str, params: Any = None, *, privilege: str = ""
    ) -> list[Any]:
        def run(conn: Connection) -> list[Any]:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())

        return self._call(action, run, privilege=privilege)

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
        """Return ``VERSION()``, for example ``"10.11.19-MariaDB-0+deb12u1"``."""
        return str(self._query("read the server version", "SELECT VERSION()")[0][0])

    def version_info(self) -> tuple[int, ...]:
        """Return the version as numbers, for example ``(10, 11, 19)``."""
        match = re.match(r"\d+(?:\.\d+)*", self.version())
        return tuple(int(part) for part in match.group(0).split(".")) if match else ()

    @property
    def is_mariadb(self) -> bool:
        """Whether the server is MariaDB (rather than MySQL)."""
        return "mariadb" in self.version().lower()

    def max_connections(self) -> int:
        """Return the server's ``max_connections``."""
        return int(self._query("read max_connections", "SELECT @@max_connections")[0][0])

    def connections_in_use(self) -> int:
        """Return ``Threads_connected``: the client connections open right now."""
        rows = self._query("count connections", "SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        return int(rows[0][1])

    # -- databases ---------------------------------------------------------------

    def list_databases(self, prefix: str = DATABASE_PREFIX) -> list[str]:
        """Return the databases whose names start with *prefix*, sorted."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._query("list databases", "SHOW DATABASES LIKE %s", (pattern,))
        return sorted(row[0] for row in rows)

    def database_exists(self, name: str) -> bool:
        """Return whether database *name* exists."""
        query = "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s"
        return bool(self._query("look up a database", query, (name,)))

    def _create(self, name: str) -> None:
        def create(conn: Connection) -> None:
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {_quote(name)} CHARACTER SET utf8mb4")

        self._call(
            f"create database {name!r}",
            create,
            {_DB_EXISTS: "Drop it first or use a new name."},
            privilege=_DATABASES,
        )

    def _clone(self, name: str, template: str) -> None:
        action = f"clone database {template!r} into {name!r}"
        fixes = {
            _DB_EXISTS: "Drop it first or use a new name.",
            _DB_UNKNOWN: "Build the template before cloning it.",
        }
        self._call(
            action, lambda conn: self._copy(conn, name, template), fixes, privilege=_DATABASES
        )

    def _copy(self, conn: Connection, name: str, template: str) -> None:
        """Copy database *template* into the new database *name*, on one connection."""
        old, new = _quote(template), _quote(name)
        lit = conn.escape
        with conn.cursor() as cursor:
            # Round trip 1: what the template holds.
            cursor.execute(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                f"FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {lit(template)};"
                f"SHOW FULL TABLES FROM {old};"
                "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
                f"WHERE TABLE_SCHEMA = {lit(template)} AND EXTRA NOT LIKE '%VIRTUAL GENERATED%' "
                "AND EXTRA NOT LIKE '%STORED GENERATED%' "
                "ORDER BY TABLE_NAME, ORDINAL_POSITION;"
                "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES "
                f"WHERE ROUTINE_SCHEMA = {lit(template)} ORDER BY ROUTINE_TYPE, ROUTINE_NAME;"
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                f"WHERE TRIGGER_SCHEMA = {lit(template)} ORDER BY EVENT_OBJECT_TABLE, "
                "EVENT_MANIPULATION, ACTION_TIMING, ACTION_ORDER"
            )
            schema, objects, column_rows, routines, triggers = _results(cursor)
            if not schema:
                import pymysql

                raise pymysql.err.OperationalError(
                    _DB_UNKNOWN, f"template database {template!r} does not exist"
                )
            charset, collation = schema[0]
            kinds = {row[0]: row[1] for row in objects}
            tables = [t for t, kind in kinds.items() if kind == "BASE TABLE"]
            views = [t for t, kind in kinds.items() if kind == "VIEW"]
            sequences = [t for t, kind in kinds.items() if kind == "SEQUENCE"]
            columns: dict[str, list[str]] = {}
            for table, column in column_rows:
                columns.setdefault(table, []).append(column)

            # Round trip 2: how to rebuild each object.
            show = [f"SHOW CREATE TABLE {old}.{_quote(t)}" for t in tables]
            show += [f"SHOW CREATE VIEW {old}.{_quote(v)}" for v in views]
            show += [f"SHOW CREATE SEQUENCE {old}.{_quote(s)}" for s in sequences]
            show += [f"SELECT next_not_cached_value FROM {old}.{_quote(s)}" for s in sequences]
            show += [f"SHOW CREATE {kind} {old}.{_quote(r)}" for kind, r in routines]
            show += [f"SHOW CREATE TRIGGER {old}.{_quote(t)}" for (t,) in triggers]
            found: list[list[Any]] = []
            if show:
                cursor.execute(";".join(show))
                found = _results(cursor)
            rows = iter(found)
            table_sql = {t: next(rows)[0][1] for t in tables}
            view_sql = {v: next(rows)[0][1] for v in views}
            sequence_sql = {s: next(rows)[0][1] for s in sequences}
            sequence_next = {s: next(rows)[0][0] for s in sequences}
            routine_rows = [next(rows)[0] for _ in routines]
            trigger_rows = [next(rows)[0] for _ in triggers]

            # References to the template's own objects are qualified in views and
            # defaults; point them at the clone.
            def retarget(ddl: str) -> str:
                return ddl.replace(f"{old}.", f"{new}.")

            script = [
                f"CREATE DATABASE {new} CHARACTER SET {charset} COLLATE {collation}",
                f"USE {new}",
                "SET @sqlsandbox_sql_mode = @@SESSION.sql_mode",
                "SET SESSION FOREIGN_KEY_CHECKS = 0",
            ]
            script += [retarget(sequence_sql[s]) for s in sequences]
            script += [
                f"SELECT SETVAL({new}.{_quote(s)}, {int(sequence_next[s])}, 0)" for s in sequences
            ]
            ordered = _fk_order(tables, table_sql)
            script += [retarget(table_sql[t]) for t in ordered]
            for table in ordered:
                names = ", ".join(_quote(c) for c in columns.get(table, []))
                script.append(
                    f"INSERT INTO {new}.{_quote(table)} ({names}) "
                    f"SELECT {names} FROM {old}.{_quote(table)}"
                )
            # Routines and triggers run with the sql_mode they were created with.
            for row in routine_rows:
                script += [f"SET SESSION sql_mode = {lit(row[1])}", retarget(_body(row))]
            script.append("SET SESSION sql_mode = @sqlsandbox_sql_mode")
            script += [retarget(view_sql[v]) for v in _view_order(views, view_sql)]
            for row in trigger_rows:
                script += [f"SET SESSION sql_mode = {lit(row[1])}", retarget(_body(row))]
            script.append("SET SESSION sql_mode = @sqlsandbox_sql_mode")

            # Round trip 3: build the clone.
            cursor.execute(script[0])
            try:
                cursor.execute(";".join(script[1:]))
                _results(cursor)
            except BaseException:
                if conn.open:
                    self._restore_session(conn)
                    cursor.execute(f"DROP DATABASE IF EXISTS {new}")
                raise
            self._restore_session(conn)

    def _restore_session(self, conn: Connection) -> None:
        """Undo the session changes a clone made (best effort, same connection)."""
        if not conn.open:
            return
        # Leave the clone, so that unqualified statements never land in it.
        back = _quote(self.admin_database or "information_schema")
        with conn.cursor() as cursor:
            cursor.execute(
                "SET SESSION FOREIGN_KEY_CHECKS = 1;"
                "SET SESSION sql_mode = COALESCE(@sqlsandbox_sql_mode, @@SESSION.sql_mode);"
                f"USE {back}"
            )
            _results(cursor)

    def _drop(self, name: str, *, missing_ok: bool) -> None:
        if_exists = "IF EXISTS " if missing_ok else ""

        def drop(conn: Connection) -> None:
            # Open transactions on the database would make DROP wait for their locks.
            self._kill(conn, name)
            with conn.cursor() as cursor:
                cursor.execute(f"DROP DATABASE {if_exists}{_quote(name)}")

        self._call(
            f"drop database {name!r}",
            drop,
            {_DB_MISSING: "Pass missing_ok=True to ignore a missing database."},
            privilege=_DATABASES,
        )

    def terminate_connections(self, name: str) -> int:
        """Kill every other connection whose current database is *name*; return how many."""
        check_owned_name(name)
        return self._call(
            f"terminate connections to {name!r}", lambda c: self._kill(c, name), privilege=_KILL
        )

    def _kill(self, conn: Connection, name: str) -> int:
        import pymysql

        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST "
                "WHERE DB = %s AND ID <> CONNECTION_ID()",
                (name,),
            )
            ids: Iterable[int] = [row[0] for row in cursor.fetchall()]
            killed = 0
            for pid in ids:
                try:
                    cursor.execute(f"KILL CONNECTION {int(pid)}")
                    killed += 1
                except pymysql.OperationalError as exc:
                    if exc.args[0] != _UNKNOWN_THREAD:  # it left on its own
                        raise
        return killed

    def execute(self, sql: str, params: Any = None, *, database: str | None = None) -> list[Any]:
        """Run *sql* (with ``%s`` placeholders) and return its rows, if any.

        Without *database* (or naming the admin database) it runs on the admin
        connection; otherwise on a short-lived connection to *database*.
        """
        if database is None or database == self.admin_database:
            return self._query("run SQL", sql, params, privilege=_RUN_SQL)
        import pymysql

        conn = self._open(database)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        except pymysql.Error as exc:
            raise operation_error(
                f"run SQL in database {database!r}", self.url, exc, privilege=_RUN_SQL
            ) from None
        finally:
            conn.close()
