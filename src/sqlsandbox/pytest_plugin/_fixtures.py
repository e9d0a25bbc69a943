"""Fixtures the plugin offers to every test suite.

The chain, each overridable in a conftest.py::

    sqlsandbox_database (session)   this worker's server, template, clone and sandbox
      └─ sandbox                    the test's isolation: owner, or a fresh clone
           ├─ db_url                URL of the database this test uses
           ├─ db_session            SQLAlchemy Session
           └─ async_db_session      SQLAlchemy AsyncSession

Nothing here opens a connection: the test's owner connects when code first
uses the database, so tests that never touch it pay nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from ._database import SandboxHandle, WorkerDatabase, get_database, opened_database
from ._marks import sandbox_spec
from ._unique import Unique
from ._xdist import run_uid, worker_count, worker_index

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = [
    "async_db_session",
    "db_session",
    "db_url",
    "sandbox",
    "sqlsandbox_database",
    "unique",
]


@pytest.fixture(scope="session")
def unique(pytestconfig: pytest.Config) -> Unique:
    """Values no other test of this run gets, on any worker: ``unique.email()``, ...

    Session-scoped, so module- and session-scoped fixtures may use it too.
    """
    return Unique(run_uid(pytestconfig), worker_index(pytestconfig), worker_count(pytestconfig))


@pytest.fixture(scope="session")
def sqlsandbox_database(pytestconfig: pytest.Config) -> WorkerDatabase:
    """This worker's database: server, template, clone, sandbox and routed engines."""
    return get_database(pytestconfig).ensure_open()


_HANDLE_KEY = pytest.StashKey[SandboxHandle]()


@contextlib.contextmanager
def _isolated(request: pytest.FixtureRequest, database: WorkerDatabase) -> Iterator[SandboxHandle]:
    item = request.node
    with (
        database.test(item.nodeid, sandbox_spec(item)) as handle,
        _joined_by_testcase(request, handle),
    ):
        item.stash[_HANDLE_KEY] = handle
        try:
            yield handle
        finally:
            del item.stash[_HANDLE_KEY]


@contextlib.contextmanager
def _joined_by_testcase(request: pytest.FixtureRequest, handle: SandboxHandle) -> Iterator[None]:
    """Let an IsolatedAsyncioTestCase's event loop use the test's connection.

    Its loop runs in a context copied when pytest made the TestCase, before
    any fixture ran, so it would not inherit the owner: join it there.
    """
    context = getattr(request.instance, "_asyncioTestContext", None)
    if context is None or handle.owner is None:
        yield
        return
    joined = handle.sandbox.join(handle.owner)
    context.run(joined.__enter__)
    try:
        yield
    finally:
        context.run(joined.__exit__, None, None, None)


@pytest.fixture(autouse=True)
def _sqlsandbox_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give every test its sandbox once the worker's database is open (lazy: no I/O)."""
    database = opened_database(request.config)
    if database is None:
        yield
        return
    with _isolated(request, database):
        yield


@pytest.fixture
def sandbox(
    request: pytest.FixtureRequest, sqlsandbox_database: WorkerDatabase
) -> Iterator[SandboxHandle]:
    """Isolate this test as its ``sandbox`` mark (or the settings) say; yield its handle."""
    handle = request.node.stash.get(_HANDLE_KEY, None)
    if handle is not None:
        yield handle
        return
    # The database opened just now, for this test: isolate it here.
    with _isolated(request, sqlsandbox_database) as handle:
        yield handle


@pytest.fixture
def db_url(sandbox: SandboxHandle) -> str:
    """URL of the database this test uses (with its password: don't print it)."""
    return sandbox.url.render()


@pytest.fixture
def db_session(sandbox: SandboxHandle) -> Iterator[Session]:
    """A SQLAlchemy Session on the test's database; everything it commits is undone."""
    from sqlalchemy.orm import Session

    session = Session(sandbox.engine())
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def async_db_session(sandbox: SandboxHandle) -> Iterator[AsyncSession]:
    """A SQLAlchemy AsyncSession on the test's database, for any event loop.

    A plain fixture, not an async one: it works with pytest-asyncio (strict
    or auto, any loop scope) and anyio alike, and connects on first use in
    the test's own loop.
    """
    from sqlalchemy.ext.asyncio import AsyncSession

    session = AsyncSession(sandbox.engine(is_async=True))
    try:
        yield session
    finally:
        if session.sync_session.in_transaction():
            # Closing would need the test's event loop, which may be gone; the
            # sandbox rolls the connection back anyway, so drop it without I/O.
            # (A plain connection of isolation="database" was closed on that
            # loop as it shut down: see drivers/_loops.py.)
            session.sync_session.invalidate()
        else:
            session.sync_session.close()
