"""A scope or a test inside a scope owner's transaction, reset like a checkin.

Tests inside a package, module or class scope whose fixtures wrote data run
on the scope owner's connection, each inside a savepoint (see ``_scope.py``).
Rolling back to the savepoint undoes their rows, ``SET``, temporary tables
and ``LISTEN``; it does not undo what no rollback undoes (``_reset.py``):
sequence values, the ``currval``/``lastval`` cache, session advisory locks
and SQL-level prepared statements. A checkin resets those for a test with an
owner of its own; :class:`NestedScope` does the same when a test (or an
inner scope) inside the scope ends, so every test starts where the scope's
fixtures left the database.

PostgreSQL only. The sequence baseline is a session setting written right
before the savepoint, inside the scope's transaction: rolling back to the
savepoint keeps it, the scope's own rollback removes it. Each nesting depth
has a setting of its own, so a class scope and a test inside it do not
overwrite each other's. The statements are prepared once per connection
(parsing them costs more than running them). Taking a baseline reads the
catalog, so a test whose predecessor at the same depth put every sequence
back reuses its :class:`Baseline` instead (the caller knows whether
anything else ran in between).

Each reset runs inside a savepoint of its own, so that a failure (our
statements deallocated by the app, a server without libxml, the leftover
check that fails on purpose) never aborts the scope's transaction.

MariaDB/MySQL counters can only be put back with DDL, which would commit the
scope's transaction: there, tests inside a scope keep the counters (and
session state) the test before them left until the scope ends. SQLite needs
nothing. Unlike a checkin, the reset drops session advisory locks and SQL
prepared statements that the scope's own fixtures made too.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ._reset import (
    LEFTOVER_MARK,
    lacks_xml,
    pg_deallocate,
    pg_drop_leftovers,
    pg_reset_sql,
    pg_snapshot_sql,
)
from ._scope import ScopeSavepoint, run_blocking

if TYPE_CHECKING:
    from ._connection import OwnedConnection
    from ._owner import Owner

__all__ = ["Baseline", "NestedScope", "nested_scope"]

_GUARD = "sqlsandbox_nested_guard"
_SNAPSHOT = "sqlsandbox_nested_snapshot"
#: The reset, with the MAX guard and (servers without libxml) without it.
_RESET = {False: "sqlsandbox_nested_reset", True: "sqlsandbox_nested_reset_nx"}
#: A setting never written: restoring from it restores nothing.
_NO_BASELINE = "sqlsandbox.nested_none"
_MISSING = "does not exist"


def _reset_body(*, no_xml: bool, session: bool) -> str:
    """The reset of a nested scope, reading the baseline from the setting named by ``$1``."""
    # Without *session* (the ownership tests' private switch) locks stay too.
    return pg_reset_sql(
        no_xml=no_xml, sequences=True, session=session, unlock=session, setting="$1"
    )


def _prepare_sql() -> list[str]:
    names = ", ".join(f"'{n}'" for n in (_SNAPSHOT, *_RESET.values()))
    return [
        pg_deallocate(f"name IN ({names})"),
        f"PREPARE {_SNAPSHOT}(text) AS {pg_snapshot_sql('$1')}",
        *(
            f"PREPARE {name}(text) AS {_reset_body(no_xml=no_xml, session=True)}"
            for no_xml, name in _RESET.items()
        ),
    ]


def _execute(conn: OwnedConnection, stmts: list[str]) -> None:
    """Run *stmts* on *conn* in one turn (one round trip where the driver allows)."""
    if conn.is_async:

        async def run() -> None:
            await conn.aenter()
            try:
                await conn.arun([("_run", stmts)])
            except BaseException as exc:
                conn.exit_with(exc)
                raise
            conn.exit()

        run_blocking(conn, run())
        return
    conn.enter()
    try:
        conn.run([("_run", stmts)])
    except BaseException as exc:
        conn.exit_with(exc)
        raise
    conn.exit()


def _guarded(conn: OwnedConnection, stmts: list[str]) -> None:
    """Run *stmts* inside a savepoint; after a failure roll back to it, then raise."""
    try:
        _execute(conn, [f"SAVEPOINT {_GUARD}", *stmts, f"RELEASE SAVEPOINT {_GUARD}"])
    except Exception:
        if conn.state == "open":
            _execute(conn, [f"ROLLBACK TO SAVEPOINT {_GUARD}", f"RELEASE SAVEPOINT {_GUARD}"])
        raise


def _prepared(conn: OwnedConnection, stmts: list[str]) -> None:
    """Run *stmts*, which use our prepared statements, preparing them first if needed."""
    adapter = conn.adapter
    if not getattr(adapter, "nested_ready", False):
        _guarded(conn, _prepare_sql())
        adapter.nested_ready = True
    try:
        _guarded(conn, stmts)
    except Exception as exc:
        if _MISSING not in str(exc) or conn.state != "open":
            raise
        # The app (or a recovery) deallocated them: prepare again, once.
        _guarded(conn, _prepare_sql())
        _guarded(conn, stmts)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """Where a nested test's sequences were put back to: the next one may start from it."""

    conn: OwnedConnection
    depth: int
    epoch: int


class NestedScope:
    """A savepoint on a scope owner's connection whose rollback also resets the session."""

    __slots__ = ("_conn", "_depth", "_epoch", "_savepoint", "_setting")

    def __init__(self, conn: OwnedConnection, reuse: Baseline | None = None) -> None:
        self._conn = conn
        self._setting: str | None = None
        self._depth = len(conn.stack)
        sandbox = conn.owner.sandbox if conn.owner is not None else None
        self._epoch = sandbox._epoch if sandbox is not None else -1
        if (
            sandbox is not None
            and sandbox.reset_sequences
            and conn.dialect == "postgresql"
            and getattr(conn.adapter, "resets", False)
        ):
            setting = f"sqlsandbox.nested_{self._depth}"
            if not (
                reuse is not None
                and reuse.conn is conn
                and reuse.depth == self._depth
                and reuse.epoch == self._epoch
            ):
                _prepared(conn, [f"EXECUTE {_SNAPSHOT}('{setting}')"])
            self._setting = setting
        self._savepoint = ScopeSavepoint(conn)
        self._savepoint._begin()

    def rollback(self) -> Baseline | None:
        """Roll back to the savepoint, then undo what the rollback left; quiet if gone.

        Returns the baseline the sequences are back at, if they are, for the
        next nested test at this depth.
        """
        self._savepoint.rollback()
        conn = self._conn
        owner = conn.owner
        if owner is None or owner.status != "active" or conn.state != "open":
            return None
        if conn.dialect != "postgresql" or not getattr(conn.adapter, "resets", False):
            return None
        sandbox = owner.sandbox
        setting = self._setting
        if setting is not None and (sandbox._epoch != self._epoch or not sandbox._alone(conn)):
            # Plain connections may have committed rows since the baseline, or
            # another owner is mid-test: putting sequences back could reuse ids.
            setting = None
        if setting is None and not sandbox._reset_session:
            return None
        self._reset(setting or _NO_BASELINE, session=sandbox._reset_session)
        if setting is None:
            return None
        return Baseline(conn, self._depth, self._epoch)

    def _reset(self, setting: str, *, session: bool) -> None:
        conn = self._conn
        adapter = conn.adapter
        if not session:
            # Only the private switch of the ownership tests gets here.
            body = _reset_body(no_xml=getattr(adapter, "no_xml", False), session=False)
            _guarded(conn, [body.replace("$1", f"'{setting}'")])
            return
        for attempt in (1, 2):
            name = _RESET[bool(getattr(adapter, "no_xml", False))]
            try:
                _prepared(conn, [f"EXECUTE {name}('{setting}')", "DISCARD SEQUENCES"])
                return
            except Exception as exc:
                if conn.state != "open":
                    raise
                if LEFTOVER_MARK in str(exc):
                    # The test left prepared statements; sequences and locks are done.
                    _guarded(conn, pg_drop_leftovers())
                    return
                if not lacks_xml(exc) or attempt == 2:
                    raise
                adapter.no_xml = True  # a server built without libxml: no MAX guard


def nested_scope(owner: Owner, reuse: Baseline | None = None) -> NestedScope | None:
    """Open a :class:`NestedScope` on *owner*'s connection; None when it has none open.

    *reuse* is what the previous nested test at the same depth returned, when
    nothing that could move sequences ran since: its baseline still holds.
    """
    conn = owner._s.conn
    if conn is None or owner._s.status != "active":
        return None
    return NestedScope(conn, reuse)
