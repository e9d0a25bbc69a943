"""Statements that would end the test's transaction if they reached the server.

MariaDB/MySQL commit DDL implicitly; any backend ends the transaction on a
raw COMMIT or ROLLBACK statement the app sends itself. Drivers map the
latter to the app's transaction (a savepoint) and refuse the former.
"""

from __future__ import annotations

import re

__all__ = ["implicit_commit", "transaction_control"]

# After optional comments: DDL (but not on TEMPORARY tables), account and
# table-maintenance statements, and raw transaction control.
_IMPLICIT = re.compile(
    r"""^\s*(?:(?:/\*.*?\*/|--[^\n]*\n|\#[^\n]*\n)\s*)*
    (?P<verb>
        (?:CREATE|DROP)(?!\s+TEMPORARY\b)(?:\s+OR\s+REPLACE)?\s+\w+
      | ALTER\s+\w+ | RENAME\s+\w+ | TRUNCATE\b
      | GRANT\b | REVOKE\b | SET\s+PASSWORD\b
      | LOCK\s+TABLES?\b | UNLOCK\s+TABLES?\b
      | (?:ANALYZE|CHECK|OPTIMIZE|REPAIR)(?:\s+NO_WRITE_TO_BINLOG|\s+LOCAL)?\s+TABLES?\b
      | FLUSH\b | RESET\b | INSTALL\b | UNINSTALL\b
      | BEGIN\b | START\s+TRANSACTION\b | COMMIT\b | XA\s+\w+
      | SET\s+(?:@@(?:SESSION\.)?|SESSION\s+)?AUTOCOMMIT\b
    )""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)


def implicit_commit(sql: str) -> str | None:
    """Return the leading words of *sql* if MariaDB/MySQL would commit because of it."""
    if not sql:
        return None
    match = _IMPLICIT.match(sql)
    if match is None:
        return None
    return " ".join(match.group("verb").upper().split())


_CONTROL = re.compile(
    r"""^\s*(?:
        (?P<begin>BEGIN|START\s+TRANSACTION)(?:\s+(?:WORK|TRANSACTION|ISOLATION|READ|DEFERRABLE|NOT)\b.*)?
      | (?P<commit>COMMIT|END)(?:\s+(?:WORK|TRANSACTION))?
      | (?P<rollback>ROLLBACK|ABORT)(?:\s+(?:WORK|TRANSACTION))?
      | (?P<ignore>SET\s+SESSION\s+TRANSACTION\b.*)
    )\s*;?\s*$""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)


def transaction_control(sql: str) -> str | None:
    """Classify a raw transaction statement: ``"begin"``, ``"commit"``, ``"rollback"``.

    ``"ignore"`` is MariaDB/MySQL's ``SET SESSION TRANSACTION ...``, which
    would outlive the test on the pooled connection. None for anything else,
    including ``ROLLBACK TO SAVEPOINT`` and ``RELEASE SAVEPOINT``.
    """
    if not isinstance(sql, str) or len(sql) > 200:
        return None
    match = _CONTROL.match(sql)
    if match is None:
        return None
    return match.lastgroup
