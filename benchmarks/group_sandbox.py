"""Sandbox group: what ownership costs a test, and what routing costs a request.

The server is ``SQLSANDBOX_BENCH_URL``, else ``SQLSANDBOX_URL``, else
PostgreSQL on 127.0.0.1:5432, else the embedded PostgreSQL; a scratch
``sqlsandbox_bench_*`` database is created and dropped.

Keys (see ../shared/BENCHMARKS.md):

- ``sandbox_overhead_ms_median``: per test, ``checkout()`` + one ``SELECT 1``
  on the owner's connection + ``checkin()``, minus the same ``SELECT 1`` on a
  plain open connection. The connection comes from a routed SQLAlchemy engine
  on psycopg 3, as in a test suite; the floor is two round trips (BEGIN and
  ROLLBACK). Samples of both sides alternate so drift cancels; medians of
  2000 after a warm-up.
  The sandbox runs with its defaults: sequence restore and session reset on.
  The floor is measured with them (``floor_ms`` on stderr: ``BEGIN``, the
  query and ``ROLLBACK`` sent straight through libpq on the plain connection,
  minus the query), so a run on a busy machine can be read against it.
- ``routed_session_overhead_ratio``: a request of 5 queries and a commit
  through an ``AsyncSession`` on a routed asyncpg engine inside a checked-out
  test, over the same request on a plain engine (same pool settings): the app's
  BEGIN/COMMIT become SAVEPOINT/RELEASE, so the round trips are the same and
  the ratio is the Python overhead of routing.

Details on stderr (not keys): the load average before and after the group
(``load_before``, ``load_after``; the machine may be shared), the floor, and
what sequence restore and session reset cost a
test, measured by alternating four sandboxes that differ only in those two
switches, on the empty database and on one with 30 serial tables, for a test
that runs ``SELECT 1`` and for one that inserts a row (``reset_*`` values, ms
per test over the same test with both switched off).

Run alone with ``make bench ONLY=sandbox``; details go to stderr.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlsandbox import Sandbox
from sqlsandbox.servers import Server, open_server

from ._stats import postgres_url

OVERHEAD_RUNS = 2000
REQUEST_RUNS = 400
WARMUP = 100


def _alternate(a: Callable[[], object], b: Callable[[], object], runs: int) -> tuple[float, float]:
    """Time *a* and *b* alternately; return both medians in milliseconds."""
    for _ in range(WARMUP):
        a()
        b()
    sa: list[float] = []
    sb: list[float] = []
    clock = time.perf_counter
    for _ in range(runs):
        t0 = clock()
        a()
        t1 = clock()
        b()
        t2 = clock()
        sa.append(t1 - t0)
        sb.append(t2 - t1)
    return statistics.median(sa) * 1000, statistics.median(sb) * 1000


def _alternate_many(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Time every function of *fns* in turn, *runs* times; return medians in ms."""
    for _ in range(WARMUP):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    clock = time.perf_counter
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            samples[name].append(clock() - t0)
    return {name: statistics.median(v) * 1000 for name, v in samples.items()}


RESET_VARIANTS = {
    "none": (False, False),
    "sequences": (True, False),
    "session": (False, True),
    "both": (True, True),
}


def _reset_costs(server: Server, *, tables: int) -> dict[str, float]:
    """Cost of sequence restore and session reset per test, over both switched off.

    Each variant has a database of its own: a variant that does not restore
    would otherwise make the others restore what it consumed.
    """
    names = {variant: f"sqlsandbox_bench_{uuid.uuid4().hex[:12]}" for variant in RESET_VARIANTS}
    for name in names.values():
        server.create_database(name)
    try:
        return _reset_costs_on({v: server.database_url(n) for v, n in names.items()}, tables)
    finally:
        for name in names.values():
            server.drop_database(name)


def _reset_costs_on(urls: dict[str, Any], tables: int) -> dict[str, float]:
    import psycopg

    from sqlsandbox.ownership import SQLAdapter

    class Adapter(SQLAdapter):
        multi_statement = True

        def execute(self, sql: str) -> None:
            with self.raw.lock:
                result = self.raw.pgconn.exec_(sql.encode())
            if result.status not in (1, 2):  # COMMAND_OK, TUPLES_OK
                raise RuntimeError(result.error_message.decode())

        def is_broken(self) -> bool:
            return bool(self.raw.closed)

        def close(self) -> None:
            self.raw.close()

    class Connector:
        is_async = False
        kind = "bench:psycopg"

        def __init__(self, dsn: str) -> None:
            self.dsn = dsn

        def connect(self) -> Adapter:
            raw = psycopg.connect(self.dsn, autocommit=True)
            return Adapter(raw, kind=self.kind, dialect="postgresql")

    for url in urls.values():
        with psycopg.connect(url.render(), autocommit=True) as conn:
            for i in range(tables):
                conn.execute(f"CREATE TABLE bench_t{i} (id serial PRIMARY KEY, x int)")  # type: ignore[arg-type]
    fns: dict[str, Callable[[], object]] = {}
    boxes = []
    for name, (sequences, session) in RESET_VARIANTS.items():
        box = Sandbox(urls[name], ownership_timeout=None, reset_sequences=sequences)
        box._reset_session = session
        box.add_connector(Connector(urls[name].render()))  # type: ignore[arg-type]
        boxes.append(box)
        for what, sql in (
            ("select", "SELECT 1"),
            ("insert", "INSERT INTO bench_t0 (x) VALUES (1)"),
        ):

            def per_test(box: Sandbox = box, sql: str = sql) -> None:
                connector = box._connectors[0]
                owner = box.checkout(connector=connector)  # type: ignore[arg-type]
                lease = box.lease(connector)  # type: ignore[arg-type]
                assert lease is not None
                lease.enter()
                lease.adapter.execute(sql)
                lease.exit()
                box.checkin(owner)

            fns[f"{what}_{name}"] = per_test
    try:
        ms = _alternate_many(fns, OVERHEAD_RUNS // 2)
    finally:
        for box in boxes:
            box.close()
    return {
        f"reset_{what}_{name}_{tables}seq_ms": round(ms[f"{what}_{name}"] - ms[f"{what}_none"], 3)
        for what in ("select", "insert")
        for name in RESET_VARIANTS
        if name != "none"
    } | {
        f"reset_{what}_none_{tables}seq_ms": round(ms[f"{what}_none"], 3)
        for what in ("select", "insert")
    }


def _overhead(url: Any) -> dict[str, float]:
    from sqlalchemy import create_engine, text

    from sqlsandbox.sqlalchemy import install

    engine = create_engine(url.with_scheme("postgresql+psycopg").render())
    sandbox = Sandbox(url, ownership_timeout=None)
    install(engine, sandbox)
    plain = engine.pool.original._create_connection().dbapi_connection  # type: ignore[attr-defined]
    plain.autocommit = True
    connector = sandbox._connectors[0]
    select_one = "SELECT 1"

    def per_test() -> None:
        owner = sandbox.checkout(connector=connector)  # type: ignore[arg-type]
        lease = sandbox.lease(connector)  # type: ignore[arg-type]
        assert lease is not None
        lease.enter()
        lease.raw.execute(select_one).fetchone()
        lease.exit()
        sandbox.checkin(owner)

    def plain_query() -> None:
        plain.execute(select_one).fetchone()

    def floor() -> None:
        plain.pgconn.exec_(b"BEGIN")
        plain.execute(select_one).fetchone()
        plain.pgconn.exec_(b"ROLLBACK")

    try:
        fns: dict[str, Callable[[], object]] = {
            "test": per_test,
            "query": plain_query,
            "floor": floor,
        }
        ms = _alternate_many(fns, OVERHEAD_RUNS)
        test_ms, query_ms = ms["test"], ms["query"]

        def lazy_test() -> None:
            owner = sandbox.checkout(lazy=True)
            with engine.connect() as conn:
                conn.execute(text(select_one)).scalar()
            sandbox.checkin(owner)

        def plain_engine_query() -> None:
            with plain_engine.connect() as conn:
                conn.execute(text(select_one)).scalar()

        plain_engine = create_engine(url.with_scheme("postgresql+psycopg").render())
        lazy_ms, engine_query_ms = _alternate(lazy_test, plain_engine_query, OVERHEAD_RUNS // 2)
        plain_engine.dispose()
    finally:
        plain.close()
        sandbox.close()
        engine.dispose()
    return {
        "test_ms": test_ms,
        "query_ms": query_ms,
        "floor_ms": ms["floor"] - query_ms,
        "lazy_engine_test_ms": lazy_ms,
        "plain_engine_query_ms": engine_query_ms,
    }


async def _requests(url: Any) -> dict[str, float]:
    from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from sqlsandbox.sqlalchemy import install

    metadata = MetaData()
    users = Table(
        "bench_users",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(50)),
        Column("email", String(100)),
    )
    dsn = url.with_scheme("postgresql+asyncpg").render()
    plain = create_async_engine(dsn)
    routed = create_async_engine(dsn)
    async with plain.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(
            insert(users), [{"name": f"u{i}", "email": f"u{i}@example.com"} for i in range(50)]
        )
    sandbox = Sandbox(url, ownership_timeout=None)
    install(routed, sandbox)
    queries = [select(users).where(users.c.id == i) for i in (1, 2, 3, 4)]
    queries.append(select(users.c.name).order_by(users.c.id).limit(10))

    async def request(engine: Any) -> None:
        async with AsyncSession(engine) as session:
            for query in queries:
                (await session.execute(query)).all()
            await session.commit()

    async def timed(engine: Any) -> float:
        started = time.perf_counter()
        await request(engine)
        return time.perf_counter() - started

    try:
        owner = await sandbox.acheckout(lazy=True)
        for _ in range(WARMUP):
            await request(plain)
            await request(routed)
        plain_s: list[float] = []
        routed_s: list[float] = []
        for _ in range(REQUEST_RUNS):
            plain_s.append(await timed(plain))
            routed_s.append(await timed(routed))
        await sandbox.acheckin(owner)
    finally:
        await sandbox.aclose()
        async with plain.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await plain.dispose()
        await routed.dispose()
    return {
        "plain_request_ms": statistics.median(plain_s) * 1000,
        "routed_request_ms": statistics.median(routed_s) * 1000,
    }


def run(machine: dict[str, Any]) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    server: Server = open_server(postgres_url())
    name = f"sqlsandbox_bench_{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    machine.setdefault("database_server", f"PostgreSQL {server.version()}")
    try:
        url = server.database_url(name)
        overhead = _overhead(url)
        requests = asyncio.run(_requests(url))
        resets = _reset_costs(server, tables=1) | _reset_costs(server, tables=30)
    finally:
        server.drop_database(name)
        server.close()
    details = {
        **overhead,
        **requests,
        **resets,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    print(
        "[bench] sandbox details: " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(details.items())),
        file=sys.stderr,
    )
    return {
        "sandbox_overhead_ms_median": round(overhead["test_ms"] - overhead["query_ms"], 3),
        "routed_session_overhead_ratio": round(
            requests["routed_request_ms"] / requests["plain_request_ms"], 3
        ),
    }
