"""Every Sandbox alive in this process, so that an owner token leads to its sandbox.

Code that only has a token (HTTP middleware reading it from a request header,
see ``sqlsandbox.http``) has no other way to know which sandbox issued it.
Sandboxes are held weakly: a sandbox nobody uses any more drops out.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._sandbox import Sandbox

__all__ = ["live_sandboxes", "register_sandbox", "sandbox_for_token"]

_lock = threading.Lock()
_sandboxes: weakref.WeakSet[Sandbox] = weakref.WeakSet()


def register_sandbox(sandbox: Sandbox) -> None:
    """Remember *sandbox* for token lookups (called by ``Sandbox.__init__``)."""
    with _lock:
        _sandboxes.add(sandbox)


def live_sandboxes() -> list[Sandbox]:
    """Return the sandboxes of this process that are not closed, oldest first."""
    with _lock:
        # A WeakSet must not grow while it is iterated: copy under the lock.
        found = list(_sandboxes)
    return [s for s in found if not s._closed]


def sandbox_for_token(token: str, among: Iterable[Sandbox] | None = None) -> Sandbox | None:
    """Return the live sandbox one of whose active owners has *token*, or None.

    Custom tokens given to ``allow(owner, "...")`` count too. *among* limits
    the search to those sandboxes.
    """
    for sandbox in live_sandboxes() if among is None else among:
        state = sandbox._tokens.get(token)
        if state is not None and state.status == "active":
            return sandbox
    return None
