"""The stack of savepoints on an owner's connection, and what each one holds.

Every app transaction of every lease (see ``_connection.py``) is an entry
here, oldest first, on one connection: a savepoint cannot skip what other
leases did after it began. The stack keeps leases that overlap from undoing
each other where it can:

- A commit of an entry that is not on top is remembered; it is released
  together with the entries above it when they finish.
- Each entry records, per *segment*, whether its own lease wrote and whether
  other leases' work landed in it. ``marks[0]`` is the savepoint its BEGIN
  made; later marks (made by :meth:`Lease.mark <._connection.Lease.mark>`
  before a statement, when the top entry's current segment already holds
  something) start new segments.
- A rollback of an entry that wrote goes back to the segment of its first
  write: its own work goes, and with it whatever landed later (logged as a
  warning when that was another lease's). An entry that only read rolls back
  like a commit, so nothing of the others is undone.
- An entry whose lease never ran a statement is a *barrier* (a scope's
  savepoint, or a driver that does not classify statements): its rollback
  undoes everything since it began, as a plain savepoint does.
- Entries of one *family* (a driver's nested transaction blocks, see
  :meth:`Lease.nest_in <._connection.Lease.nest_in>`) share their writes: what
  an inner block committed is the outer block's own work.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from ._ddl import UNDO
from ._messages import DOCS_PAGE

__all__ = ["Action", "Savepoint", "Stack", "savepoint_name"]

log = logging.getLogger("sqlsandbox.ownership")

#: One adapter call: its method name, then its arguments.
Action = tuple[Any, ...]
_names = itertools.count(1)


def savepoint_name() -> str:
    """Return a savepoint name no other savepoint of this process has."""
    return f"sqlsandbox_{next(_names)}"


class Savepoint:
    """One app transaction on the stack and what happened in it, by segment.

    ``dirty`` is the first segment its lease (or a lease nested in it) wrote
    in, ``own_last`` / ``foreign_last`` the last segments holding its own /
    other leases' work, ``used`` whether its lease ran any statement.
    """

    __slots__ = (
        "alive",
        "committed",
        "dirty",
        "foreign_last",
        "marks",
        "name",
        "own_last",
        "root",
        "used",
    )

    def __init__(self, name: str | None, root: object) -> None:
        # None stands for the real transaction of a ``sandbox=False`` owner.
        self.name = name
        self.marks: list[str | None] = [name]
        #: The outermost lease of the family that began it.
        self.root = root
        self.committed = False
        self.alive = True
        self.used = False
        self.dirty: int | None = None
        self.own_last: int | None = None
        self.foreign_last: int | None = None

    def __repr__(self) -> str:
        return f"<Savepoint {self.name} marks={len(self.marks)} dirty={self.dirty}>"

    @property
    def has_content(self) -> bool:
        return self.dirty is not None or self.foreign_last is not None

    def wrote(self) -> None:
        cur = len(self.marks) - 1
        if self.dirty is None:
            self.dirty = cur
        self.own_last = cur

    def got_foreign(self) -> None:
        self.foreign_last = len(self.marks) - 1

    def collapse(self) -> None:
        """The app rolled back or released a savepoint of its own: later marks may be gone."""
        del self.marks[1:]
        self.dirty = self.own_last = 0
        if self.foreign_last is not None:
            self.foreign_last = 0


class Stack(list[Savepoint]):
    """The entries of one connection, oldest first; methods return what to run."""

    def __init__(self, owner_name: str) -> None:
        super().__init__()
        self.owner_name = owner_name

    def begin(self, root: object, *, real: bool) -> tuple[Action, Savepoint]:
        """Push a new entry: a SAVEPOINT, or (*real*, empty stack) the owner's BEGIN."""
        if real and not self:
            entry = Savepoint(None, root)
            action: Action = ("begin", None)
        else:
            entry = Savepoint(savepoint_name(), root)
            action = ("savepoint", entry.name)
        self.append(entry)
        return action, entry

    def commit(self, entry: Savepoint) -> list[Action]:
        if not entry.alive:
            return []
        entry.committed = True
        if self[-1] is not entry:
            return []  # released later, together with the entries above it
        lowest = self._pop_committed()
        assert lowest is not None
        return [_finish(lowest)]

    def rollback(self, entry: Savepoint) -> list[Action]:
        if not entry.alive:
            return []
        index = self.index(entry)
        if not entry.used:
            target = 0  # a barrier: undo everything since it began
        elif entry.dirty is not None:
            target = entry.dirty
            self._warn_lost(entry, index, target)
        elif index == len(self) - 1 and entry.foreign_last is None:
            target = 0  # nobody's work to lose; also ends a failed statement
        else:
            # It only read: rolling back would undo only what others did.
            return self.commit(entry)
        for dropped in self[index + 1 :]:
            dropped.alive = False
        del self[index + 1 :]
        mark = entry.marks[target]
        if target == 0:
            entry.alive = False
            del self[index]
            if entry.name is None:
                return [("rollback",)]
            actions: list[Action] = [("rollback_to", mark, mark)]
            lowest = self._pop_committed()
            if lowest is not None:
                actions.append(_finish(lowest))
            return actions
        # Keep the segments before its first write: they hold others' work only.
        del entry.marks[target + 1 :]
        entry.dirty = entry.own_last = None
        entry.foreign_last = target - 1
        entry.committed = True
        lowest = self._pop_committed()
        assert lowest is not None
        if lowest.name is None:
            return [("rollback_to", mark, None), ("commit",)]
        return [("rollback_to", mark, lowest.name)]

    def _pop_committed(self) -> Savepoint | None:
        """Remove the run of committed entries on top; return the lowest of them.

        What they hold now belongs to the entry below (released into it).
        """
        i = len(self)
        while i > 0 and self[i - 1].committed:
            i -= 1
        if i == len(self):
            return None
        lowest = self[i]
        below = self[i - 1] if i > 0 else None
        for entry in self[i:]:
            entry.alive = False
            if below is not None and entry.has_content:
                if entry.root is below.root:
                    below.wrote()
                else:
                    below.got_foreign()
        del self[i:]
        return lowest

    def _warn_lost(self, entry: Savepoint, index: int, target: int) -> None:
        lost = entry.foreign_last is not None and entry.foreign_last >= target
        if not lost:
            root = entry.root
            lost = any(e.has_content and e.root is not root for e in self[index + 1 :])
        if lost:
            log.warning(
                "sqlsandbox: owner %s: a rollback also undid work of another session of the "
                "same owner, which it overlapped after writing (one connection, one stack of "
                "savepoints). See %s#concurrent-sessions",
                self.owner_name,
                DOCS_PAGE,
            )

    # -- what statements did ---------------------------------------------------------

    def wrote(self, chain: list[Savepoint], root: object, kind: int) -> None:
        """Record a write of the lease whose open entries (innermost first) are *chain*.

        It belongs to each of them; it landed in the top entry's current
        segment, which holds another lease's work from now on unless the top
        entry is of the same family.
        """
        if not self:
            return
        top = self[-1]
        landed = False
        for i, sp in enumerate(chain):
            sp.used = True
            if kind == UNDO and i == 0:
                sp.collapse()
            else:
                sp.wrote()
            landed = landed or sp is top
        if not landed:
            if top.root is root:
                top.wrote()
            else:
                top.got_foreign()

    def wrote_unknown(self, chain: list[Savepoint]) -> None:
        """A statement nobody classified: a write of every entry it may belong to."""
        if not self:
            return
        # The outermost of the chain (its last) is the lowest on the stack.
        low = self.index(chain[-1]) if chain else 0
        for i in range(low, len(self)):
            self[i].wrote()

    def forget(self) -> None:
        for entry in self:
            entry.alive = False
        self.clear()


def _finish(lowest: Savepoint) -> Action:
    return ("commit",) if lowest.name is None else ("release", lowest.name)
