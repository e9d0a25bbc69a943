"""Data written by fixtures of a wider scope than the test: session, package, module, class.

Two mechanisms, chosen by how long the data must live (see docs/pytest.md,
"Data from session, module and class fixtures"):

- **Session scope: commits into the worker's own clone.** Session-scoped
  fixtures run unboxed: what they write commits into this worker's database,
  which no other worker sees and which is dropped when the run ends. Every
  test then runs exactly as without the fixture (its own owner, rolled back
  at checkin), and sees the data through every driver, thread and process.
- **Package, module and class scope: a scope transaction.** Their fixtures
  run on one *scope owner*; its transaction holds their data. Each narrower
  scope takes a savepoint on it, and so does every test inside; a test, or
  a scope, that ends rolls back to its savepoint. Tests inside such a scope
  use the scope owner's connection (like Django's ``setUpTestData``).

A SQLAlchemy ``Session`` that a fixture or a test leaves in a transaction
would carry its connection into the next test. So at the end of a
session-scoped fixture's setup its open sessions are committed (their data
belongs to the session), and at the end of a test the sessions it began and
left open are rolled back (their data is gone anyway): their next use runs
on the next test's connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from .._exceptions import SandboxError

if TYPE_CHECKING:
    from ..ownership import Baseline, NestedScope, Owner, Sandbox

__all__ = ["ScopeData", "SessionTracker", "Use"]

#: Fixture scopes whose data lives in the scope transaction.
NARROW_SCOPES = frozenset({"package", "module", "class"})


class Use(NamedTuple):
    """A Session that began a transaction during a block."""

    ref: weakref.ref[Any]
    #: True for the Session inside an AsyncSession.
    is_async: bool


@dataclasses.dataclass
class _Level:
    """One package, module or class whose fixtures use the scope owner."""

    node: pytest.Item | pytest.Collector
    #: The savepoint the level rolls back to, or None when the scope owner
    #: had no connection yet when the level began (nothing to keep then).
    savepoint: NestedScope | None
    #: Sessions its fixtures began: ended when it ends.
    begun: list[Use] = dataclasses.field(default_factory=list)


class SessionTracker:
    """Find SQLAlchemy sessions a fixture or a test left in a transaction.

    Listens to ``after_begin`` of every ``Session`` while collecting, and only
    for sessions on a routed engine begun in pytest's own thread: sessions of
    the app's request handlers are the app's business. A session kept across
    a test's end (in a global, a wider fixture, an object of the app) would
    still hold the ended owner's connection; ending it makes its next use
    take the next test's. An ORM event, unlike an engine's connection events,
    costs nothing per statement.
    """

    def __init__(self, routed: Callable[[], list[Any]]) -> None:
        self._routed = routed
        self._thread = threading.get_ident()
        self._current: list[Use] | None = None
        self._installed = False

    def install(self) -> None:
        """Start listening (once), if SQLAlchemy is importable."""
        if self._installed:
            return
        try:
            from sqlalchemy import event
            from sqlalchemy.orm import Session
        except ImportError:  # pragma: no cover - the plugin works without SQLAlchemy
            return
        event.listen(Session, "after_begin", self._after_begin)
        self._installed = True

    def uninstall(self) -> None:
        """Stop listening."""
        if not self._installed:
            return
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        with contextlib.suppress(Exception):
            event.remove(Session, "after_begin", self._after_begin)
        self._installed = False

    def _after_begin(self, session: Any, transaction: Any, connection: Any) -> None:
        begun = self._current
        if begun is None or threading.get_ident() != self._thread:
            return
        engine = connection.engine
        if any(getattr(e, "sync_engine", e) is engine for e in self._routed()):
            begun.append(Use(weakref.ref(session), bool(connection.dialect.is_async)))

    @contextlib.contextmanager
    def collect(self) -> Iterator[list[Use]]:
        """Record the sessions begun in the block (nested blocks record their own)."""
        outer = self._current
        begun: list[Use] = []
        self._current = begun
        try:
            yield begun
        finally:
            self._current = outer

    @staticmethod
    def _open(begun: list[Use]) -> Iterator[tuple[Any, bool]]:
        """Yield (session, is_async) for the sessions of *begun* still in a transaction."""
        seen: set[int] = set()
        for ref, is_async in begun:
            session = ref()
            if session is None or id(session) in seen:
                continue
            seen.add(id(session))
            if session.in_transaction():
                yield session, is_async

    @classmethod
    def open_sessions(cls, begun: list[Use]) -> Iterator[Any]:
        """Yield the synchronous sessions of *begun* still in a transaction, once each."""
        for session, is_async in cls._open(begun):
            if not is_async:
                yield session

    @classmethod
    def end(cls, begun: list[Use]) -> None:
        """End the sessions *begun* left in a transaction; their next use starts anew.

        A synchronous Session is rolled back. An AsyncSession is invalidated,
        without I/O (its event loop may be gone): its connection goes back,
        and the owner's rollback (or the test's savepoint) undoes what it did.
        """
        for session, is_async in cls._open(begun):
            with contextlib.suppress(Exception):
                if is_async:
                    session.invalidate()
                else:
                    session.rollback()


class ScopeData:
    """The scope owner of one worker, its levels, and where each fixture writes."""

    def __init__(self, sandbox: Sandbox, routed: Callable[[], list[Any]]) -> None:
        self.sandbox = sandbox
        self.tracker = SessionTracker(routed)
        self.owner: Owner | None = None
        self.levels: list[_Level] = []
        #: Bindings entered for fixture teardowns, left in pytest_fixture_post_finalizer.
        self._teardowns: dict[int, contextlib.ExitStack] = {}
        #: Where the last nested test left the sequences, while nothing else ran.
        self._baseline: Baseline | None = None

    # -- the scope owner ----------------------------------------------------------

    def _scope_owner(self, node: pytest.Item | pytest.Collector) -> Owner:
        owner = self.owner
        if owner is None or not owner.active:
            import contextvars

            # Checked out in an empty context: pytest's own context is bound to
            # it only while a fixture of that scope (or a test inside) runs.
            owner = self.owner = contextvars.Context().run(
                self.sandbox.checkout,
                lazy=True,
                name=f"{node.nodeid or node.name} (fixtures of scope package/module/class)",
                ownership_timeout=None,
            )
        return owner

    def nested_owner(self) -> Owner | None:
        """Return the scope owner when it holds data, so tests must run inside it."""
        owner = self.owner
        if owner is None or not owner.active or owner.kind is None:
            return None
        return owner

    def _begin_level(self, node: pytest.Item | pytest.Collector) -> tuple[Owner, _Level]:
        self._baseline = None
        owner = self._scope_owner(node)
        for level in self.levels:
            if level.node is node:
                return owner, level
        from ..ownership import nested_scope

        # Registered before the level's first fixture finalizer, so it runs
        # after all of them: when the scope ends.
        node.addfinalizer(functools.partial(self._end_level, node))
        level = _Level(node, nested_scope(owner))
        self.levels.append(level)
        return owner, level

    def _end_level(self, node: pytest.Item | pytest.Collector) -> None:
        self._baseline = None
        if not any(level.node is node for level in self.levels):
            return
        while self.levels:
            level = self.levels.pop()
            self.end_test_sessions(level.begun)
            if level.savepoint is not None:
                level.savepoint.rollback()
            elif self.owner is not None:
                # The scope owner had no connection when this level began: all
                # its data came from here (and deeper levels, already ended).
                self._checkin_owner()
            if level.node is node:
                break
        if not self.levels:
            self._checkin_owner()

    def _give_back_if_read_only(self) -> None:
        """Check the scope owner in when its fixtures only read (a login, a lookup).

        Tests of the scope then get owners of their own, with everything a
        checkin resets, instead of running inside the scope's transaction.
        """
        owner = self.owner
        if owner is None or owner.kind is None or any(lv.savepoint for lv in self.levels):
            return
        from ..ownership import wrote_anything

        if wrote_anything(owner):
            return
        for level in self.levels:
            self.end_test_sessions(level.begun)
            level.begun.clear()
        self._checkin_owner()

    def _checkin_owner(self) -> None:
        owner, self.owner = self.owner, None
        if owner is not None:
            self.sandbox.checkin(owner)

    # -- fixtures -----------------------------------------------------------------

    def _binding(self, scope: str, node: pytest.Item | pytest.Collector) -> Any:
        if scope == "session":
            return self.sandbox.unboxed()
        return self.sandbox.join(self._scope_owner(node))

    @contextlib.contextmanager
    def fixture_setup(self, fixturedef: pytest.FixtureDef[Any], node: Any) -> Iterator[None]:
        """Run the setup of a wider-scoped fixture where its data belongs."""
        self._baseline = None  # it may move sequences the next nested test starts from
        scope = fixturedef.scope
        if scope == "session":
            with self.sandbox.unboxed(), self.tracker.collect() as begun:
                yield
            # Its sessions' open transactions hold connections outside any test:
            # commit them, so their next use runs on the test's connection.
            for session in self.tracker.open_sessions(begun):
                try:
                    session.commit()
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        session.rollback()
                    raise SandboxError(
                        f"sqlsandbox committed the session that session-scoped fixture "
                        f"{fixturedef.argname!r} left in a transaction, so that tests use it "
                        f"on their own connection, and the commit failed: "
                        f"{type(exc).__name__}: {exc}. Commit or roll back in the fixture "
                        "before it yields."
                    ) from exc
        else:
            owner, level = self._begin_level(node)
            with self.sandbox.join(owner), self.tracker.collect() as begun:
                yield
            level.begun.extend(begun)
            self._give_back_if_read_only()
        fixturedef.addfinalizer(functools.partial(self._enter_teardown, fixturedef, scope, node))

    def _enter_teardown(self, fixturedef: pytest.FixtureDef[Any], scope: str, node: Any) -> None:
        # Runs just before the fixture's own teardown code (finalizers run last
        # in, first out); pytest_fixture_post_finalizer leaves it after.
        stack = contextlib.ExitStack()
        stack.enter_context(self._binding(scope, node))
        self._teardowns[id(fixturedef)] = stack

    def fixture_finished(self, fixturedef: pytest.FixtureDef[Any]) -> None:
        """Leave the binding entered for *fixturedef*'s teardown, if any."""
        stack = self._teardowns.pop(id(fixturedef), None)
        if stack is not None:
            stack.close()

    # -- tests --------------------------------------------------------------------

    @contextlib.contextmanager
    def nested_test(self, owner: Owner) -> Iterator[None]:
        """Run a test inside a savepoint of the scope owner, rolled back and reset at its end."""
        from ..ownership import nested_scope

        with self.sandbox.join(owner):
            savepoint = nested_scope(owner, self._baseline)
            self._baseline = None
            try:
                yield
            finally:
                if savepoint is not None:
                    self._baseline = savepoint.rollback()

    def end_test_sessions(self, begun: list[Use]) -> None:
        """End the sessions a test (or a scope) began and left in a transaction."""
        self.tracker.end(begun)

    def close(self) -> None:
        """Forget the scope owner and stop tracking sessions."""
        self.tracker.uninstall()
        for stack in self._teardowns.values():
            with contextlib.suppress(Exception):
                stack.close()
        self._teardowns.clear()
        self.levels.clear()
        with contextlib.suppress(Exception):
            self._checkin_owner()
