"""Suite group: the reference suite (examples/reminders) under every isolation strategy.

Same tests, same schema, same server, same machine, one run of the group, so
the ratios compare. Each variant is one ``python -m pytest examples/reminders``
in a subprocess, timed from start to exit (interpreter start, collection,
template or schema set-up included):

- ``sqlsandbox_tx_n0`` / ``sqlsandbox_tx_n2``: the suite as written
  (transaction isolation; the ~40 tests marked ``isolation="database"`` get
  their own clone), serial and ``-n 2``;
- ``sqlsandbox_db_n2``: ``--sqlsandbox-isolation=database``, ``-n 2``;
- ``create_all_per_test``, ``truncate_per_test``, ``savepoint_recipe``,
  ``pytest_postgresql``: ``-p no:sqlsandbox`` and a plugin of
  ``benchmarks/suite_plugins`` doing what teams write by hand, serial (how
  such suites are run).

The server is ``SQLSANDBOX_BENCH_URL`` if set, else the embedded PostgreSQL
(what ``make demo`` uses), for every variant. pytest-postgresql is installed
with ``pip install --target`` under ``.sqlsandbox/bench-deps`` and put on the
``PYTHONPATH`` of its variant only, so the project's environment never loads
it. ``SQLSANDBOX_BENCH_SUITE_RUNS=N`` runs every variant N times (medians);
``SQLSANDBOX_BENCH_SUITE_ONLY=a,b`` runs only those variants.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlsandbox.servers import open_server

ROOT = Path(__file__).resolve().parents[1]
SUITE = "examples/reminders"
DEPS = ROOT / ".sqlsandbox" / "bench-deps" / "pytest_postgresql"
# Pinned so that the numbers can be reproduced; --no-deps: the rest is already installed.
PYTEST_POSTGRESQL = ("pytest-postgresql==10.0.0", "mirakuru==3.1.0", "port-for==1.1.1")
RUN_TIMEOUT = 3600
FAILURES_SHOWN = 12

# Native tracebacks: pytest's own rendering parses source and can crash on the deep
# exception groups a failing baseline produces (SystemError in ast.parse, then no summary).
BASE = ["-p", "no:cacheprovider", "-q", "--tb=native"]
VARIANTS: dict[str, list[str]] = {
    "sqlsandbox_tx_n0": [],
    "sqlsandbox_tx_n2": ["-n", "2"],
    "sqlsandbox_db_n2": ["-n", "2", "--sqlsandbox-isolation=database"],
    "savepoint_recipe": ["-p", "no:sqlsandbox", "-p", "benchmarks.suite_plugins.savepoint"],
    "truncate_per_test": ["-p", "no:sqlsandbox", "-p", "benchmarks.suite_plugins.truncate"],
    "create_all_per_test": ["-p", "no:sqlsandbox", "-p", "benchmarks.suite_plugins.create_all"],
    "pytest_postgresql": [
        "-p",
        "no:sqlsandbox",
        "-p",
        "benchmarks.suite_plugins.pytest_postgresql",
    ],
}


def _log(message: str) -> None:
    print(f"[bench] suite: {message}", file=sys.stderr, flush=True)


def report_counts(path: Path) -> tuple[dict[str, int], list[str]]:
    """Return how many tests passed, failed (in any phase) or were skipped, and which failed."""
    outcomes: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        outcomes[record["nodeid"]] = record["outcome"]
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome in outcomes.values():
        counts[outcome] += 1
    return counts, sorted(node for node, outcome in outcomes.items() if outcome == "failed")


def _env(server_url: str, *, extra_path: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["SQLSANDBOX_URL"] = server_url
    # The app's env vars come from each variant; nothing of the caller's may leak in.
    for name in ("DATABASE_URL", "SYNC_DATABASE_URL"):
        env.pop(name, None)
    paths = [str(ROOT)] + ([str(extra_path)] if extra_path else [])
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_variant(name: str, server_url: str) -> dict[str, Any] | None:
    """Run the suite once as variant *name*; return wall seconds and counts (None: it broke)."""
    extra = DEPS if name == "pytest_postgresql" else None
    with tempfile.TemporaryDirectory(prefix="sqlsandbox-bench-suite-") as tmp:
        report = Path(tmp) / "outcomes.jsonl"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            SUITE,
            *BASE,
            *VARIANTS[name],
            "-p",
            "benchmarks.suite_plugins._report",
        ]
        load = os.getloadavg()[0]
        started = time.perf_counter()
        result = subprocess.run(
            cmd,
            cwd=ROOT,
            env={**_env(server_url, extra_path=extra), "SQLSANDBOX_BENCH_REPORT": str(report)},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        wall = time.perf_counter() - started
        if not report.is_file():
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            _log(f"{name} did not finish (exit {result.returncode}); left out:\n{tail}")
            return None
        counts, failures = report_counts(report)
    passed, failed = counts["passed"], counts["failed"]
    _log(f"{name}: {wall:.1f} s, {passed} passed, {failed} failed (load average {load:.1f})")
    for node in failures[:FAILURES_SHOWN]:
        _log(f"  failed: {node}")
    if len(failures) > FAILURES_SHOWN:
        _log(f"  ... and {len(failures) - FAILURES_SHOWN} more")
    return {"wall_s": round(wall, 2), "passed": passed, "failed": failed}


def ensure_pytest_postgresql() -> bool:
    """Install pytest-postgresql apart from the project's environment; return success."""
    marker = DEPS / ".installed"
    wanted = " ".join(PYTEST_POSTGRESQL)
    if marker.is_file() and marker.read_text() == wanted:
        return True
    _log(f"installing {wanted} into {DEPS.relative_to(ROOT)}")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    result = subprocess.run(
        [*pip, "--no-deps", "--upgrade", "--target", str(DEPS), *PYTEST_POSTGRESQL],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        _log(f"cannot install pytest-postgresql, its variant is left out:\n{result.stderr}")
        return False
    marker.write_text(wanted)
    return True


def collected_tests(server_url: str) -> int:
    """Return how many tests the suite collects."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", SUITE, "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=_env(server_url),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    match = re.search(r"(\d+) tests? collected", result.stdout)
    if not match:
        raise RuntimeError(
            f"cannot collect {SUITE}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return int(match.group(1))


def _drop_leftovers(server: Any) -> None:
    """Drop databases a crashed baseline run left (only the names the baselines make)."""
    for name in server.list_databases("sqlsandbox_bench_"):
        if re.match(r"sqlsandbox_bench_(create_all|truncate|savepoint|pgpostgres)_", name):
            server.terminate_connections(name)
            server.drop_database(name)


def run(machine: dict[str, Any]) -> dict[str, Any]:
    """Measure the ``suite`` key."""
    server = open_server(os.environ.get("SQLSANDBOX_BENCH_URL") or None)
    try:
        url = server.url.render()
        machine["suite_server"] = f"PostgreSQL {server.version()} at {server.url.masked()}"
        runs = int(os.environ.get("SQLSANDBOX_BENCH_SUITE_RUNS", "1"))
        only = [v for v in os.environ.get("SQLSANDBOX_BENCH_SUITE_ONLY", "").split(",") if v]
        names = [name for name in VARIANTS if not only or name in only]
        if "pytest_postgresql" in names and not ensure_pytest_postgresql():
            names.remove("pytest_postgresql")
        tests = collected_tests(url)
        # Warm-up, untimed: builds (or finds) the template, fills the OS caches.
        run_variant("sqlsandbox_tx_n0", url)
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for _ in range(runs):
            for name in names:
                measured = run_variant(name, url)
                if measured is not None:
                    samples[name].append(measured)
        _drop_leftovers(server)
    finally:
        server.close()
    variants = {}
    for name, results in samples.items():
        if not results:
            continue  # nothing is estimated: a variant that never finished is left out
        wall = statistics.median(r["wall_s"] for r in results)
        chosen = min(results, key=lambda r: abs(r["wall_s"] - wall))
        variants[name] = {
            "wall_s": round(wall, 2),
            "passed": chosen["passed"],
            "failed": chosen["failed"],
        }
    return {"suite": {"tests": tests, "variants": variants}}
