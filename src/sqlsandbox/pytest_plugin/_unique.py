"""Values that no other test of the run gets, on any xdist worker.

Concurrent tests that insert rows with unique columns (emails, usernames,
external ids) must not pick the same values; under transaction isolation two
workers' rows never meet, but a shared server, ``isolation="none"`` or a test
that talks to another process can still collide. :class:`Unique` makes
collisions impossible by construction instead of by luck.
"""

from __future__ import annotations

import itertools
import threading

__all__ = ["INTEGER_START", "Unique"]

#: First value of :meth:`Unique.integer`: far above ids from sequences and seed
#: data, and small enough for a 32-bit ``INTEGER`` column.
INTEGER_START = 1_000_000_000


class Unique:
    """Hand out strings, emails and integers unique across tests and xdist workers.

    Worker *index* of *count* gets integers ``INTEGER_START + index + k * count``
    (k = 0, 1, ...), so workers never overlap and no coordination is needed;
    strings also carry a short id of the run, so they differ from one run to
    the next too. Thread-safe.
    """

    def __init__(self, run: str, index: int = 0, count: int = 1) -> None:
        if not 0 <= index < max(count, 1):
            raise ValueError(f"worker index {index} is outside 0..{count - 1}")
        self.run = run[:6].lower()
        self.index = index
        self.count = max(count, 1)
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Unique run={self.run} worker={self.index}/{self.count}>"

    def _next(self) -> int:
        with self._lock:
            return next(self._counter)

    def integer(self) -> int:
        """Return a positive integer no other call in this run returns."""
        return INTEGER_START + self.index + self._next() * self.count

    def string(self, prefix: str = "u") -> str:
        """Return ``{prefix}_{run}_{worker}_{n}``: lower-case letters, digits and ``_``."""
        return f"{prefix}_{self.run}_{self.index}_{self._next()}"

    def email(self, prefix: str = "user", domain: str = "example.com") -> str:
        """Return a unique, valid address such as ``user_3f9a1c_0_7@example.com``."""
        return f"{self.string(prefix)}@{domain}"
