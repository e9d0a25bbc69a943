"""Server group: start-up of the embedded PostgreSQL, cold (initdb + start) and warm.

Cold: a fresh EmbeddedPostgres in an empty cache directory, from finding the
binaries to a server that accepts connections. Warm: the same from the cached
cluster. Stopping is not timed. Medians of COLD_RUNS and WARM_RUNS runs (after
one untimed warm start).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from sqlsandbox.servers._embedded import EmbeddedPostgres, find_binaries

COLD_RUNS = 3
WARM_RUNS = 5


def _timed_start(cache: Path) -> float:
    started = time.perf_counter()
    server = EmbeddedPostgres(cache)
    url = server.start()
    elapsed = time.perf_counter() - started
    # Prove the server answers before counting the run, then stop it untimed.
    with psycopg.connect(url.render()) as conn:
        conn.execute("SELECT 1")
    server.stop()
    return elapsed


def run(machine: dict[str, Any]) -> dict[str, Any]:
    """Measure embedded_cold_start_s and embedded_warm_start_s."""
    binaries = find_binaries()
    machine["embedded_postgres"] = f"PostgreSQL {binaries.version} ({binaries.source})"
    machine["runs_as_root"] = os.geteuid() == 0
    # As root the server runs as another OS user, which must be able to enter
    # the cache directory: /var/tmp, not root's private temp directories.
    base = Path(
        tempfile.mkdtemp(prefix="sqlsandbox-bench-", dir="/var/tmp" if os.geteuid() == 0 else None)
    )
    base.chmod(0o755)
    try:
        cold = [_timed_start(base / f"cold-{i}") for i in range(COLD_RUNS)]
        cached = base / "cold-0"
        _timed_start(cached)  # warm-up: page cache, first fork of the binaries
        warm = [_timed_start(cached) for _ in range(WARM_RUNS)]
    finally:
        for cache in base.iterdir():
            EmbeddedPostgres(cache).stop()
        shutil.rmtree(base, ignore_errors=True)
    shown = {name: [round(s, 3) for s in runs] for name, runs in (("cold", cold), ("warm", warm))}
    print(f"[bench] server runs (s): {shown}", file=sys.stderr)
    return {
        "embedded_cold_start_s": round(statistics.median(cold), 3),
        "embedded_warm_start_s": round(statistics.median(warm), 3),
    }
