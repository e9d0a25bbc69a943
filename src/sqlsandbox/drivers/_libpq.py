"""Run the sandbox's own statements on a psycopg 3 connection straight through libpq.

Shared by the SQLAlchemy adapter and the direct psycopg route: one round trip
per call, under psycopg's lock, without the cursor machinery.
"""

from __future__ import annotations

from typing import Any


class LibpqStatements:
    """Mixin for adapters whose ``raw`` is a blocking ``psycopg.Connection``."""

    raw: Any

    def use_libpq(self) -> None:
        """Load what :meth:`execute` needs (psycopg is imported only here)."""
        from psycopg import errors, pq

        self._ok = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
        self._error_from_result = errors.error_from_result

    def execute(self, sql: str) -> None:
        conn = self.raw
        with conn.lock:
            result = conn.pgconn.exec_(sql.encode())
        if result.status not in self._ok:
            raise self._error_from_result(result, encoding=conn.info.encoding)

    def in_transaction(self) -> bool:
        return bool(self.raw.pgconn.transaction_status != 0)

    def is_broken(self) -> bool:
        return bool(self.raw.closed or self.raw.broken)
