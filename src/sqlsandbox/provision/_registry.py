"""The registry: which databases sqlsandbox created, for whom, and whether they are complete.

It lives next to the databases it describes, in the database
``sqlsandbox_registry`` on the same server (for SQLite: the file of that name
in the SQLite directory). That is the one place every process and every
machine using the server can see, so a run on one machine can tell that a
database belongs to a live run on another, and a dead run's leftovers are
found by whoever comes next. A local file could not do that; a table in a
database of the user's would mean writing where we have no business.

Tables (all timestamps are the database server's clock, in epoch seconds, so
heartbeats compare across machines whatever their clocks say):

- ``sqlsandbox_owners``: one row per process using the server (run id, host,
  pid, process start time, heartbeat).
- ``sqlsandbox_databases``: one row per database we created, written *before*
  the database exists and deleted *after* it is dropped, with its state
  (``building``/``ready`` for templates, ``clone`` for clones, ``spare`` for
  an unused clone a run left for the next one) and owner.
- ``sqlsandbox_uses``: which owner uses which template, so pruning never
  drops a template a live run is cloning from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import ProvisioningError, SandboxError
from ..servers._errors import cause_fix, scrub
from . import _dbapi
from ._names import REGISTRY_DATABASE
from ._process import process_state, start_time

if TYPE_CHECKING:
    from ..servers._base import Server

__all__ = ["DatabaseRow", "Owner", "OwnerRow", "Registry", "owner_alive"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sqlsandbox_owners (
        owner_id VARCHAR(64) PRIMARY KEY,
        run_id VARCHAR(64) NOT NULL,
        host VARCHAR(255) NOT NULL,
        pid INTEGER NOT NULL,
        pid_started DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS sqlsandbox_databases (
        name VARCHAR(64) PRIMARY KEY,
        fingerprint VARCHAR(64) NOT NULL,
        kind VARCHAR(16) NOT NULL,
        state VARCHAR(16) NOT NULL,
        owner_id VARCHAR(64),
        project VARCHAR(255),
        label VARCHAR(255),
        details TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        last_used_at DOUBLE PRECISION NOT NULL,
        build_s DOUBLE PRECISION
    )""",
    """CREATE TABLE IF NOT EXISTS sqlsandbox_uses (
        owner_id VARCHAR(64) NOT NULL,
        fingerprint VARCHAR(64) NOT NULL,
        PRIMARY KEY (owner_id, fingerprint)
    )""",
)

_NOW = {
    "postgresql": "extract(epoch from clock_timestamp())",
    "mysql": "UNIX_TIMESTAMP(NOW(6))",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}


@dataclasses.dataclass(frozen=True)
class Owner:
    """The process using the server: what the registry records as a database's owner."""

    owner_id: str
    run_id: str
    host: str
    pid: int
    pid_started: float

    @classmethod
    def current(cls, run_id: str | None = None) -> Owner:
        """Describe this process, in run *run_id* (default: a new one)."""
        pid = os.getpid()
        return cls(
            owner_id=uuid.uuid4().hex,
            run_id=run_id or uuid.uuid4().hex[:16],
            host=socket.gethostname(),
            pid=pid,
            pid_started=start_time(pid) or 0.0,
        )


@dataclasses.dataclass(frozen=True)
class OwnerRow:
    """An owner as the registry holds it, with its last heartbeat."""

    owner_id: str
    run_id: str
    host: str
    pid: int
    pid_started: float
    started_at: float
    heartbeat_at: float


@dataclasses.dataclass(frozen=True)
class DatabaseRow:
    """A database as the registry holds it."""

    name: str
    fingerprint: str
    kind: str
    state: str
    owner_id: str | None
    project: str | None
    label: str | None
    details: str | None
    created_at: float
    last_used_at: float
    build_s: float | None

    def parts(self) -> dict[str, str]:
        """Return the fingerprint's parts recorded at build time (templates only)."""
        if not self.details:
            return {}
        loaded = json.loads(self.details)
        return {str(k): str(v) for k, v in loaded.get("parts", {}).items()}


def owner_alive(row: OwnerRow, *, now: float, stale_after: float) -> bool:
    """Return whether the process of *row* still runs.

    On this host the process table is the truth (a pid reused by another
    program is told apart by its start time). Other hosts cannot be asked, so
    their heartbeat must be fresher than *stale_after* seconds.
    """
    if row.host == socket.gethostname():
        state = process_state(row.pid)
        if state != "running":
            return state == "unknown"
        try:
            started = start_time(row.pid)
        except Exception:
            return True  # not ours to ask: never drop what may be a live run's
        return started is not None and abs(started - row.pid_started) < 1.0
    return now - row.heartbeat_at < stale_after


_FOREVER_S = 365 * 24 * 3600


def _database_row(r: tuple[Any, ...]) -> DatabaseRow:
    return DatabaseRow(
        name=r[0],
        fingerprint=r[1],
        kind=r[2],
        state=r[3],
        owner_id=r[4],
        project=r[5],
        label=r[6],
        details=r[7],
        created_at=float(r[8]),
        last_used_at=float(r[9]),
        build_s=None if r[10] is None else float(r[10]),
    )


def _lock_key(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class Registry:
    """Read and write the registry of one server over one long-lived connection.

    Safe to use from several threads: statements are serialised by a lock.
    A connection that breaks (server restart, terminated backend) is reopened
    once per statement.
    """

    def __init__(self, server: Server, database: str = REGISTRY_DATABASE) -> None:
        self.server = server
        self.database = database
        self.backend = "mysql" if server.backend in ("mysql", "mariadb") else server.backend
        self.url = server.database_url(database)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._ready = False

    # -- connection ---------------------------------------------------------

    def open(self) -> Registry:
        """Create the registry database and tables if needed; return self."""
        if self._ready:
            return self
        if not self.server.database_exists(self.database):
            try:
                self.server.create_database(self.database)
            except Exception:
                # Another process created it first; anything else fails again below.
                if not self.server.database_exists(self.database):
                    raise
        with self._lock:
            conn = self._connection()
            try:
                if not self._has_schema(conn):
                    self._create_schema(conn)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    conn.close()
                self._conn = None
                if isinstance(exc, SandboxError) or not isinstance(exc, Exception):
                    raise
                raise self._error("create its tables", exc) from exc
        self._ready = True
        return self

    def _error(self, action: str, exc: BaseException) -> ProvisioningError:
        """Build the error for a registry statement that failed, with a fix by its cause."""
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = scrub(lines[0] if lines else type(exc).__name__, self.url).rstrip(".")
        privilege = (
            f"the right to create and write tables in database {self.database!r} (make "
            "the user its owner, or grant it ALL on that database)"
        )
        fallback = (
            "Check the server (its log says more). If the registry was damaged or changed "
            f"by hand, drop database {self.database!r} while no test run uses this server "
            "(sqlsandbox makes it again, but forgets what earlier runs left: drop those "
            "sqlsandbox_* databases by hand)."
        )
        fix = cause_fix(detail, self.url, action=action, privilege=privilege, fallback=fallback)
        return ProvisioningError(
            f"The sqlsandbox registry {self.url.masked()} failed to {action}: {detail}. {fix}"
        )

    def _connect(self) -> Any:
        conn = _dbapi.connect(self.url, autocommit=True, threadsafe=True)
        if self.backend == "postgresql":
            # No WAL flush per registry write: each costs 1-2 ms (far more on a busy
            # disk) and every run makes several. A crash of the server can lose only
            # the last writes: a row written before a CREATE DATABASE is made durable
            # by that statement's own flush; a lost heartbeat, use, removal or
            # completion is made good by the reaper, or by building again.
            try:
                conn.execute("SET synchronous_commit = off")
            except Exception as exc:
                conn.close()
                raise self._error("open", exc) from exc
        if self.backend == "sqlite":
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except Exception as exc:
                conn.close()
                raise self._error("open", exc) from exc
        return conn

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _has_schema(self, conn: Any) -> bool:
        """Return whether every registry table exists (one read, no DDL, no commit)."""
        names = ("sqlsandbox_owners", "sqlsandbox_databases", "sqlsandbox_uses")
        if self.backend == "postgresql":
            sql = (
                "SELECT count(*) FROM pg_catalog.pg_tables "
                "WHERE schemaname = current_schema() AND tablename = ANY(%s)"
            )
            params: tuple[Any, ...] = (list(names),)
        elif self.backend == "sqlite":
            sql = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?)"
            params = names
        else:
            sql = (
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name IN (%s, %s, %s)"
            )
            params = names
        cur = conn.cursor()
        try:
            cur.execute(sql, params)
            return int(cur.fetchone()[0]) == len(names)
        finally:
            cur.close()

    def _create_schema(self, conn: Any) -> None:
        if self.backend == "postgresql":
            # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog.
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("registry"),))
                for ddl in _SCHEMA:
                    conn.execute(ddl)
        elif self.backend == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            try:
                for ddl in _SCHEMA:
                    conn.execute(ddl)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        else:
            cur = conn.cursor()
            try:
                for ddl in _SCHEMA:
                    cur.execute(ddl)
            finally:
                cur.close()

    def close(self) -> None:
        """Close the registry connection."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None

    def _sql(self, sql: str) -> str:
        sql = sql.replace("{now}", _NOW[self.backend])
        return sql.replace("%s", "?") if self.backend == "sqlite" else sql

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        text = self._sql(sql)
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    cur = conn.cursor()
                    try:
                        cur.execute(text, tuple(params))
                        rows = cur.fetchall() if cur.description else []
                    finally:
                        cur.close()
                    return [tuple(row) for row in rows]
                except Exception as exc:
                    if attempt == 1 and _dbapi.is_connection_error(conn, exc):
                        with contextlib.suppress(Exception):
                            conn.close()
                        self._conn = None
                        continue
                    verb = "read" if text.lstrip().upper().startswith("SELECT") else "write"
                    raise self._error(verb, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- owners ---------------------------------------------------------------

    def now(self) -> float:
        """Return the registry server's clock in epoch seconds."""
        return float(self._run("SELECT {now}")[0][0])

    def add_owner(self, owner: Owner) -> None:
        """Record *owner* as a live user of the server."""
        self._run(
            "INSERT INTO sqlsandbox_owners (owner_id, run_id, host, pid, pid_started, "
            "started_at, heartbeat_at) VALUES (%s, %s, %s, %s, %s, {now}, {now})",
            (owner.owner_id, owner.run_id, owner.host, owner.pid, owner.pid_started),
        )

    def heartbeat(self, owner_id: str) -> None:
        """Mark *owner_id* as alive now."""
        self._run(
            "UPDATE sqlsandbox_owners SET heartbeat_at = {now} WHERE owner_id = %s", (owner_id,)
        )

    def remove_owner(self, owner_id: str) -> None:
        """Forget *owner_id* and what it used (its databases must be gone already)."""
        self._run("DELETE FROM sqlsandbox_uses WHERE owner_id = %s", (owner_id,))
        self._run("DELETE FROM sqlsandbox_owners WHERE owner_id = %s", (owner_id,))

    def owners(self) -> list[OwnerRow]:
        """Return every registered owner."""
        rows = self._run(
            "SELECT owner_id, run_id, host, pid, pid_started, started_at, heartbeat_at "
            "FROM sqlsandbox_owners ORDER BY started_at"
        )
        return [
            OwnerRow(r[0], r[1], r[2], int(r[3]), float(r[4]), float(r[5]), float(r[6]))
            for r in rows
        ]

    def set_heartbeat_at(self, owner_id: str, seconds_ago: float) -> None:
        """Pretend *owner_id* last beat *seconds_ago* seconds ago (for tools and tests)."""
        self._run(
            "UPDATE sqlsandbox_owners SET heartbeat_at = {now} - %s WHERE owner_id = %s",
            (seconds_ago, owner_id),
        )

    def add_use(self, owner_id: str, fingerprint: str) -> None:
        """Record that *owner_id* clones from the template *fingerprint*."""
        if self.backend == "mysql":
            sql = "INSERT IGNORE INTO sqlsandbox_uses (owner_id, fingerprint) VALUES (%s, %s)"
        else:
            sql = (
                "INSERT INTO sqlsandbox_uses (owner_id, fingerprint) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING"
            )
        self._run(sql, (owner_id, fingerprint))

    def users_of(self, fingerprint: str) -> list[str]:
        """Return the owners that use the template *fingerprint*."""
        rows = self._run(
            "SELECT owner_id FROM sqlsandbox_uses WHERE fingerprint = %s", (fingerprint,)
        )
        return [r[0] for r in rows]

    # -- databases --------------------------------------------------------------

    _COLUMNS = (
        "name, fingerprint, kind, state, owner_id, project, label, details, "
        "created_at, last_used_at, build_s"
    )

    def add_database(
        self,
        name: str,
        *,
        fingerprint: str,
        kind: str,
        state: str,
        owner_id: str | None,
        project: str | None = None,
        label: str | None = None,
        details: str | None = None,
    ) -> None:
        """Record *name* before it is created, so a crash in between leaves a trace."""
        self._run(
            f"INSERT INTO sqlsandbox_databases ({self._COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, {now}, {now}, NULL)",
            (name, fingerprint, kind, state, owner_id, project, label, details),
        )

    def mark_ready(self, name: str, *, build_s: float) -> None:
        """Mark the template *name* complete and no longer owned by its builder."""
        self._run(
            "UPDATE sqlsandbox_databases SET state = 'ready', owner_id = NULL, build_s = %s, "
            "last_used_at = {now} WHERE name = %s",
            (build_s, name),
        )

    def mark_spare(self, name: str) -> None:
        """Leave the unused clone *name* for a later run (no owner: the reaper keeps it)."""
        self._run(
            "UPDATE sqlsandbox_databases SET state = 'spare', owner_id = NULL, "
            "last_used_at = {now} WHERE name = %s",
            (name,),
        )

    def spares(self, fingerprint: str, kind: str) -> int:
        """Return how many spare clones of *fingerprint* for *kind* wait for a run."""
        rows = self._run(
            "SELECT count(*) FROM sqlsandbox_databases "
            "WHERE fingerprint = %s AND kind = %s AND state = 'spare'",
            (fingerprint, kind),
        )
        return int(rows[0][0])

    def claim_spare(self, fingerprint: str, kind: str, owner_id: str) -> str | None:
        """Make a spare clone of *fingerprint* for *kind* owned by *owner_id*; return its name.

        None if there is none. Processes claiming at the same time never get the same one.
        """
        if self.backend == "postgresql":
            rows = self._run(
                "UPDATE sqlsandbox_databases SET state = 'clone', owner_id = %s, "
                "last_used_at = {now} WHERE name = (SELECT name FROM sqlsandbox_databases "
                "WHERE fingerprint = %s AND kind = %s AND state = 'spare' "
                "ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING name",
                (owner_id, fingerprint, kind),
            )
            return str(rows[0][0]) if rows else None
        candidates = self._run(
            "SELECT name FROM sqlsandbox_databases "
            "WHERE fingerprint = %s AND kind = %s AND state = 'spare' ORDER BY created_at",
            (fingerprint, kind),
        )
        for (name,) in candidates:
            self._run(
                "UPDATE sqlsandbox_databases SET state = 'clone', owner_id = %s, "
                "last_used_at = {now} WHERE name = %s AND state = 'spare'",
                (owner_id, name),
            )
            rows = self._run("SELECT owner_id FROM sqlsandbox_databases WHERE name = %s", (name,))
            if rows and rows[0][0] == owner_id:
                return str(name)
        return None

    def touch(self, name: str) -> None:
        """Record that the template *name* was used now."""
        self._run("UPDATE sqlsandbox_databases SET last_used_at = {now} WHERE name = %s", (name,))

    def remove_database(self, name: str) -> None:
        """Forget *name* (after it was dropped)."""
        self._run("DELETE FROM sqlsandbox_databases WHERE name = %s", (name,))

    def databases(
        self,
        *,
        fingerprint: str | None = None,
        kind: str | None = None,
        owner_id: str | None = None,
    ) -> list[DatabaseRow]:
        """Return the registered databases matching every given filter."""
        where, params = [], []
        for column, value in (("fingerprint", fingerprint), ("kind", kind), ("owner_id", owner_id)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._run(
            f"SELECT {self._COLUMNS} FROM sqlsandbox_databases{clause} ORDER BY created_at",
            params,
        )
        return [_database_row(r) for r in rows]

    # -- server-side locks --------------------------------------------------------

    @contextlib.contextmanager
    def server_lock(self, key: str, *, timeout: float | None) -> Iterator[bool]:
        """Hold the server-wide lock *key* on a connection of its own; yield whether it is held.

        With *timeout* 0 this only tries; otherwise it waits up to *timeout*
        seconds (None: for ever). The lock dies with the connection, so a
        killed builder never leaves it held. SQLite has no server: its lock is
        a file lock in the SQLite directory, shared by every process that uses
        the directory whatever its cache directory.
        """
        if self.backend == "sqlite":
            with self._directory_lock(key, timeout) as held:
                yield held
            return
        conn = self._connect()
        try:
            held = self._acquire(conn, key, timeout)
            try:
                yield held
            finally:
                if held:
                    self._release(conn, key)
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def shared_lock(self, key: str) -> Iterator[bool]:
        """Try to hold the server lock *key* shared, on the registry connection; yield if held.

        PostgreSQL only (elsewhere this yields False). Processes that only
        read a finished template take its lock shared: a builder or a pruner
        (which hold it exclusively, see :meth:`server_lock`) never works under
        them, and they need neither a connection of their own nor the local
        file lock. Never waits: False means someone holds it exclusively.
        """
        if self.backend != "postgresql":
            yield False
            return
        lock_key = _lock_key(key)
        held = bool(self._run("SELECT pg_try_advisory_lock_shared(%s)", (lock_key,))[0][0])
        try:
            yield held
        finally:
            if held:
                # If the connection broke meanwhile, the lock went with its session.
                with contextlib.suppress(Exception):
                    self._run("SELECT pg_advisory_unlock_shared(%s)", (lock_key,))

    @contextlib.contextmanager
    def _directory_lock(self, key: str, timeout: float | None) -> Iterator[bool]:
        import filelock

        folder = Path(str(self.url.database)).parent / ".sqlsandbox-locks"
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        lock = filelock.FileLock(str(folder / f"{digest}.lock"))
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except filelock.Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def _acquire(self, conn: Any, key: str, timeout: float | None) -> bool:
        cur = conn.cursor()
        try:
            if self.backend == "postgresql":
                if timeout == 0:
                    cur.execute("SELECT pg_try_advisory_lock(%s)", (_lock_key(key),))
                    return bool(cur.fetchone()[0])
                ms = 0 if timeout is None else max(1, int(timeout * 1000))
                cur.execute(f"SET lock_timeout = {ms}")
                try:
                    cur.execute("SELECT pg_advisory_lock(%s)", (_lock_key(key),))
                except Exception as exc:
                    if "lock timeout" in str(exc).lower():
                        return False
                    raise
                return True
            name = f"sqlsandbox_{hashlib.sha256(key.encode()).hexdigest()[:40]}"
            # MariaDB answers NULL at once to a negative timeout: "for ever" is a year.
            wait = _FOREVER_S if timeout is None else timeout
            cur.execute("SELECT GET_LOCK(%s, %s)", (name, wait))
            return bool(cur.fetchone()[0])
        finally:
            cur.close()

    def _release(self, conn: Any, key: str) -> None:
        cur = conn.cursor()
        try:
            if self.backend == "postgresql":
                cur.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(key),))
            else:
                name = f"sqlsandbox_{hashlib.sha256(key.encode()).hexdigest()[:40]}"
                cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
        finally:
            cur.close()
