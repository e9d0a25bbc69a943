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
- ``routed_session_overhead_ratio``: a request of 5 queries and a commit
  through an ``AsyncSession`` on a routed asyncpg engine inside a checked-out
  test, over the same request on a plain engine (same pool settings): the app's
  BEGIN/COMMIT become SAVEPOINT/RELEASE, so the round trips are the same and
  the ratio is the Python overhead of routing.

Run alone with ``make bench ONLY=sandbox``; details go to stderr.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlsandbox import Sandbox
from sqlsandbox.servers import Server, open_server

OVERHEAD_RUNS = 2000
REQUEST_RUNS = 400
WARMUP = 100


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _postgres_url() -> str | None:
    for name in ("SQLSANDBOX_BENCH_URL", "SQLSANDBOX_URL"):
        if os.environ.get(name):
            return os.environ[name]
    if _answers("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432/postgres"
    return None  # open_server(None): the embedded PostgreSQL


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

    try:
        test_ms, query_ms = _alternate(per_test, plain_query, OVERHEAD_RUNS)

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
    server: Server = open_server(_postgres_url())
    name = f"sqlsandbox_bench_{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    machine.setdefault("database_server", f"PostgreSQL {server.version()}")
    try:
        url = server.database_url(name)
        overhead = _overhead(url)
        requests = asyncio.run(_requests(url))
    finally:
        server.drop_database(name)
        server.close()
    details = {**overhead, **requests}
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
