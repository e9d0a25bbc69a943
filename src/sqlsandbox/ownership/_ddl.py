"""Classify SQL statements by their text, cheaply, for the ownership layer.

- :func:`implicit_commit`: MariaDB/MySQL commit DDL implicitly; drivers refuse it.
- :func:`transaction_control`: a raw BEGIN / COMMIT / ROLLBACK the app sends
  itself; drivers map it to the app's transaction (a savepoint).
- :func:`statement_kind`: whether a statement may change anything a rollback
  would undo (``WRITE``), only reads (``READ``), or rolls back / releases one
  of the app's own savepoints (``UNDO``). A session that only read can be
  rolled back without undoing what other sessions of its owner committed in
  the meantime (see ``_connection.py``). When unsure, it says ``WRITE``.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["READ", "UNDO", "WRITE", "implicit_commit", "statement_kind", "transaction_control"]

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


# -- reads and writes ---------------------------------------------------------------

#: Kinds returned by :func:`statement_kind` (READ is falsy on purpose).
READ = 0
WRITE = 1
UNDO = 2

_LEAD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.DOTALL)
_WORD = re.compile(r"[A-Za-z]+")
#: Statements that read, provided :func:`_reads_only` agrees with the rest of the text.
_READ_VERBS = frozenset(
    {"SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN", "DESCRIBE", "DESC"}
)
#: Cursor statements: the query behind the cursor was classified when it was declared.
_CURSOR_VERBS = frozenset({"FETCH", "MOVE", "CLOSE"})
#: Words that make a read statement write, lock or do something else a rollback undoes.
_HAZARD = re.compile(
    r"\b(?:INSERT|UPDATE|DELETE|MERGE|UPSERT|REPLACE\s+INTO|INTO|SHARE|LOCK|ANALY[SZ]E|CALL|COPY)\b",
    re.IGNORECASE,
)
#: A name followed by ``(``: a function call, a type modifier or a keyword before a subquery.
_CALL = re.compile(r"([\w$.\"`]+)\s*\(")
#: Functions (and keywords followed by a parenthesis) that only compute a value.
#: Anything else called in a read (``nextval``, ``pg_advisory_lock``, the app's
#: own functions...) may write, so the statement counts as a write.
_PURE = frozenset(
    """
    abs acos all and any array array_agg array_length array_position array_remove
    array_to_string as asin atan atan2 avg between bit_length bool bool_and bool_or
    by btrim cardinality case cast cbrt ceil ceiling char char_length character
    character_length chr coalesce concat concat_ws convert cos cot count cume_dist
    current_database current_date current_schema current_setting current_time
    current_timestamp current_user date date_add date_format date_part date_sub
    date_trunc datetime day dayofmonth dayofweek dayofyear dec decimal decode degrees
    dense_rank distinct div double each else encode every except exists exp extract
    filter first_value float float4 float8 floor for format from generate_series
    greatest group group_concat having hour if ifnull iif in initcap instr int int2
    int4 int8 integer intersect interval is isnull json json_agg json_array
    json_array_length json_build_array json_build_object json_each json_extract
    json_extract_path json_extract_path_text json_group_array json_group_object
    json_object json_object_agg json_typeof jsonb jsonb_agg jsonb_array_elements
    jsonb_array_elements_text jsonb_array_length jsonb_build_array
    jsonb_build_object jsonb_each jsonb_each_text jsonb_extract_path
    jsonb_extract_path_text jsonb_object_agg jsonb_object_keys jsonb_path_exists
    jsonb_path_query jsonb_set jsonb_strip_nulls jsonb_typeof julianday lag
    last_insert_rowid last_value lateral lead least left length like ln localtime
    localtimestamp log log10 lower lpad ltrim make_date make_interval
    make_timestamp make_timestamptz max md5 min minute mod month not now nth_value
    ntile nullif numeric octet_length on or over overlay partition percent_rank
    percentile_cont percentile_disc pg_backend_pid pg_typeof pi plainto_tsquery
    position power printf quarter quote_ident quote_literal quote_nullable radians
    rank real regexp_match regexp_matches regexp_replace regexp_split_to_array
    repeat replace reverse right round row row_number row_to_json rpad rtrim second
    select sign similarity sin smallint some split_part sqrt starts_with stddev
    stddev_pop stddev_samp strftime string_agg string_to_array strpos substr
    substring sum tan text then time timestamp timestamptz to_char to_date to_json
    to_jsonb to_number to_timestamp to_tsquery to_tsvector total translate trim
    trunc ts_headline ts_rank ts_rank_cd typeof union unnest upper using uuid
    values var_pop var_samp varchar variance version websearch_to_tsquery week
    when where width_bucket within year
    """.split()
)


def _reads_only(text: str) -> bool:
    """Return whether the body of a read statement calls nothing that may write."""
    if _HAZARD.search(text):
        return False
    semicolon = text.find(";")
    if semicolon != -1 and text[semicolon + 1 :].strip():
        return False  # several statements in one string
    for match in _CALL.finditer(text):
        name = match.group(1).replace('"', "").replace("`", "").rsplit(".", 1)[-1].lower()
        if name not in _PURE:
            return False
    return True


def _kind(sql: str) -> int:
    start = _LEAD.match(sql)
    rest = sql[start.end() :] if start is not None else sql
    word = _WORD.match(rest)
    if word is None:
        # An empty statement (a driver's ping sends ";") reads nothing.
        return READ if not rest.strip(" \t\r\n;") else WRITE
    verb = word.group().upper()
    if verb in _READ_VERBS:
        return READ if _reads_only(rest) else WRITE
    if verb in _CURSOR_VERBS:
        return READ
    if verb == "ROLLBACK" or verb == "RELEASE":
        return UNDO  # of the app's own savepoint: raw ROLLBACK/RELEASE never get here
    return WRITE


@lru_cache(maxsize=4096)
def _cached_kind(sql: str) -> int:
    return _kind(sql)


def statement_kind(sql: object) -> int:
    """Return ``READ``, ``WRITE`` or ``UNDO`` for *sql*; ``WRITE`` for anything not a string.

    Cached: apps run the same few statements again and again. Very long
    texts (bulk statements with inline values) are classified without the
    cache, most of them by their first word.
    """
    if type(sql) is not str:
        return WRITE
    if len(sql) > 16384:
        return _kind(sql)
    return _cached_kind(sql)
