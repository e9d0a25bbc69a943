"""Statements that MariaDB/MySQL commit implicitly, which would end the test's transaction."""

from __future__ import annotations

import re

__all__ = ["implicit_commit"]

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
