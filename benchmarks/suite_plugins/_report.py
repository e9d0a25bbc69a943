"""Record every test's outcome as it ends, for the suite benchmark.

Loaded with ``-p benchmarks.suite_plugins._report``: one JSON line per test
in the file named by ``SQLSANDBOX_BENCH_REPORT``,
written when the test's teardown ends, so the counts survive a run whose
session end breaks (a baseline that leaks connections can make pytest's
unraisable-exception check fail after the last test, before any summary).
Under xdist only the controller writes (workers' reports reach it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_failed: set[str] = set()
_skipped: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    target = os.environ.get("SQLSANDBOX_BENCH_REPORT")
    if not target or "PYTEST_XDIST_WORKER" in os.environ:
        return
    if report.failed:
        _failed.add(report.nodeid)
    elif report.skipped and report.when in ("setup", "call"):
        _skipped.add(report.nodeid)
    if report.when != "teardown":
        return
    if report.nodeid in _failed:
        outcome = "failed"
    elif report.nodeid in _skipped:
        outcome = "skipped"
    else:
        outcome = "passed"
    with Path(target).open("a", encoding="utf-8") as out:
        out.write(json.dumps({"nodeid": report.nodeid, "outcome": outcome}) + "\n")
