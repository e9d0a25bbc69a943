"""Savepoints on an owner's open connection, for data shared by several tests.

The pytest plugin keeps data written by module-, class- and package-scoped
fixtures in the transaction of one *scope owner*; each scope inside it and
each test then runs inside a savepoint of its own on that connection, rolled
back when it ends (the model of Django's ``TestCase.setUpTestData``).

:func:`scope_savepoint` opens such a savepoint from synchronous code, on
whatever thread or event loop the connection belongs to. It is a thin use of
:class:`~._connection.Lease`: the savepoint sits on the owner's stack like an
app transaction, so transactions begun after it nest inside it and rolling it
back undoes them too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .._exceptions import OwnershipError
from ._connection import Lease
from ._host import host_loop

if TYPE_CHECKING:
    from ._connection import OwnedConnection
    from ._owner import Owner

__all__ = ["ScopeSavepoint", "run_blocking", "scope_savepoint", "wrote_anything"]


def run_blocking(conn: OwnedConnection, coro: Coroutine[Any, Any, None]) -> None:
    """Run *coro* where *conn* may be used, blocking the calling thread."""
    if conn.host is not None:
        conn.host.run_sync(coro)
        return
    loop = conn.loop
    if loop is None:
        # Not bound to a loop (psycopg, aiosqlite): any loop will do.
        host_loop().run_sync(coro)
        return
    if loop.is_closed():
        coro.close()
        raise OwnershipError(
            f"The asyncio connection of owner {conn.owner!r} belongs to an event loop that "
            "is closed, so the data of its scope is gone. Give fixtures that share data "
            "across tests an event loop that lives as long as they do (pytest-asyncio: "
            "loop_scope equal to the fixture's scope)."
        )
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise OwnershipError(
            f"Cannot open a scope savepoint for owner {conn.owner!r} from inside its own "
            "running event loop; the pytest plugin does this from synchronous code only."
        )
    if loop.is_running():
        asyncio.run_coroutine_threadsafe(coro, loop).result()
    else:
        loop.run_until_complete(coro)


class ScopeSavepoint:
    """A savepoint on a scope owner's connection; :meth:`rollback` undoes what followed it."""

    __slots__ = ("_conn", "_lease")

    def __init__(self, conn: OwnedConnection) -> None:
        self._conn = conn
        self._lease = Lease(conn)

    def _begin(self) -> None:
        if self._conn.is_async:
            run_blocking(self._conn, self._lease.abegin())
        else:
            self._lease.begin()

    def rollback(self) -> None:
        """Roll back to the savepoint and release it; quiet if the connection is gone."""
        lease = self._lease
        if not lease.in_transaction:
            return
        try:
            if self._conn.is_async:
                run_blocking(self._conn, lease.arollback())
            else:
                lease.rollback()
        except OwnershipError:
            pass  # the owner ended or lost its connection: nothing is left to undo


def scope_savepoint(owner: Owner) -> ScopeSavepoint | None:
    """Open a savepoint on *owner*'s connection; None when it has no open connection."""
    conn = owner._s.conn
    if conn is None or owner._s.status != "active":
        return None
    savepoint = ScopeSavepoint(conn)
    savepoint._begin()
    return savepoint


#: Statements that fail when the transaction has written something. MariaDB has
#: no reliable equivalent (information_schema.innodb_trx is a cache refreshed
#: every 0.1 s), so there a scope that touched the database keeps its owner.
_WROTE_CHECK: dict[str, str] = {
    "postgresql": (
        "DO $$ BEGIN IF pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL THEN "
        "RAISE EXCEPTION 'sqlsandbox: the scope wrote'; END IF; END $$"
    ),
}


def wrote_anything(owner: Owner) -> bool:
    """Return whether *owner*'s transaction changed data; True when it cannot tell.

    Lets the plugin give back a scope owner whose fixtures only read, so the
    tests of that scope get owners (and resets) of their own.
    """
    conn = owner._s.conn
    if conn is None:
        return False
    check = _WROTE_CHECK.get(conn.dialect)
    if check is None or conn.state != "open":
        return True
    savepoint = scope_savepoint(owner)
    if savepoint is None:
        return True
    lease = Lease(conn)
    try:
        if conn.is_async:

            async def run() -> None:
                await lease.aenter()
                try:
                    await conn.adapter.execute(check)
                except BaseException as exc:
                    conn.exit_with(exc)
                    raise
                conn.exit()

            run_blocking(conn, run())
        else:
            lease.enter()
            try:
                conn.adapter.execute(check)
            except BaseException as exc:
                conn.exit_with(exc)
                raise
            conn.exit()
    except Exception:
        return True
    finally:
        savepoint.rollback()
    return False
