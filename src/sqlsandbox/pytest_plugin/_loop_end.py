"""Check a test's owner in on its event loop when that loop ends before teardown does.

pytest-asyncio sets a test's function-scoped loop up last, so it closes it
first: before the plugin's synchronous teardown checks the test's owner in.
An owner connection tied to that loop (asyncpg, aiomysql) can then only be
dropped, without the checkin's rollback and sequence restore. The drivers
tell listeners when such a loop shuts down (``drivers/_loops.py``); the
test's owner is checked in right there, on its own loop, and the teardown's
checkin then finds nothing left to do.

Only once the test function has returned (``note_call_ended``, called by
the runtime hooks): a synchronous test that runs ``asyncio.run()`` twice
keeps its owner, and gets the error that explains the loop mismatch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..drivers._loops import add_loop_end_listener, remove_loop_end_listener

if TYPE_CHECKING:
    from ..ownership import Owner, Sandbox

__all__ = ["LoopEndCheckin", "note_call_ended"]

#: The checkins of the tests running now, innermost last (pytester nests runs).
_CURRENT: list[LoopEndCheckin] = []


def note_call_ended() -> None:
    """Note that the running test's function has returned: its loop may end from now on."""
    if _CURRENT:
        _CURRENT[-1].armed = True


class LoopEndCheckin:
    """Check *owner* in when the event loop its connection is tied to shuts down."""

    def __init__(self, sandbox: Sandbox, owner: Owner) -> None:
        self.sandbox = sandbox
        self.owner = owner
        #: Whether the owner had a connection when its loop ended.
        self.used = False
        #: Whether the test function has returned.
        self.armed = False
        self._listener = self._loop_ends
        self.error: Exception | None = None

    def listening(self) -> LoopEndCheckin:
        """Watch for the end of the owner's loop during a ``with`` block."""
        return self

    # A class, not @contextmanager: this runs for every test (a few microseconds less).
    def __enter__(self) -> LoopEndCheckin:
        add_loop_end_listener(self._listener)
        _CURRENT.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _CURRENT.remove(self)
        remove_loop_end_listener(self._listener)

    async def _loop_ends(self, raw: Any) -> None:
        owner = self.owner
        if not self.armed or not owner.active or owner.connection is not raw:
            return
        self.used = True
        try:
            await self.sandbox.acheckin(owner)
        except Exception as exc:  # raised by check(), where the teardown's checkin would raise
            self.error = exc

    def check(self) -> None:
        """Raise what the checkin on the loop raised (a deferred constraint, say)."""
        error, self.error = self.error, None
        if error is not None:
            raise error
