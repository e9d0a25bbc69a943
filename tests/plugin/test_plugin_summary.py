"""The sqlsandbox block at the end of a run, merged across xdist workers."""

from __future__ import annotations

import pytest

from sqlsandbox.pytest_plugin import RunRecorder

from .conftest import MakeProject

# What the database parts of the plugin will record; here a conftest plays them.
RECORDING_CONFTEST = """
import os
import pytest
from sqlsandbox.pytest_plugin import get_recorder

@pytest.fixture(scope="session", autouse=True)
def _worker_database(pytestconfig):
    recorder = get_recorder(pytestconfig)
    recorder.record_server("postgresql://postgres:s3cret@127.0.0.1:5432/postgres", "15.19")
    recorder.record_template("3f9a1c2b7d8e", reused=True)
    recorder.record_clone()
    yield

@pytest.fixture(autouse=True)
def _per_test(request, pytestconfig):
    mark = request.node.get_closest_marker("sandbox")
    isolation = mark.kwargs["isolation"] if mark else "transaction"
    recorder = get_recorder(pytestconfig)
    recorder.record_test(isolation)
    if isolation == "database":
        recorder.record_clone()
        recorder.record_warm_acquire(0.004 if request.node.name.endswith("[0]") else 0.0)
"""

TESTS = """
import pytest

@pytest.mark.parametrize("n", range(6))
def test_tx(n):
    pass

@pytest.mark.sandbox(isolation="database")
@pytest.mark.parametrize("n", range(3))
def test_db(n):
    pass
"""


def test_render_and_mask() -> None:
    recorder = RunRecorder()
    recorder.record_server("postgresql://app:s3cret@db:5432/postgres", "15.19")
    recorder.record_template("abc123", reused=False, seconds=1.234)
    recorder.record_clone(3)
    recorder.record_test("transaction")
    recorder.record_test("database")
    recorder.record_warm_acquire(0.0)
    recorder.record_warm_acquire(0.010)
    assert recorder.render() == [
        "server     postgresql://app:***@db:5432/postgres, version 15.19",
        "template   abc123  built in 1.23 s",
        "clones     3",
        "tests      transaction 1, database 1",
        "warm pool  2 taken, 1 waited, 10 ms in all",
    ]


def test_merge_adds_workers_and_prefers_a_build_over_a_reuse() -> None:
    controller = RunRecorder()
    for reused, seconds in ((True, 0.0), (False, 2.5)):
        worker = RunRecorder()
        worker.record_server("postgresql://u:pw@h/postgres")
        worker.record_template("abc123", reused=reused, seconds=seconds)
        worker.record_clone()
        worker.record_test("transaction")
        controller.merge(worker.to_dict())
    assert controller.clones == 2
    assert controller.tests["transaction"] == 2
    assert controller.render()[1] == "template   abc123  built in 2.50 s"
    assert "pw" not in str(controller.to_dict())


def test_nothing_recorded_prints_nothing(
    pytester: pytest.Pytester, make_project: MakeProject
) -> None:
    make_project(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "- sqlsandbox -" not in result.stdout.str()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_block_after_the_run(
    pytester: pytest.Pytester, make_project: MakeProject, workers: list[str]
) -> None:
    make_project(conftest=RECORDING_CONFTEST, test_x=TESTS)
    result = pytester.runpytest_subprocess(*workers)
    result.assert_outcomes(passed=9)
    clones = 3 + (2 if workers else 1)
    result.stdout.fnmatch_lines(
        [
            "*- sqlsandbox -*",
            "server     postgresql://postgres:***@127.0.0.1:5432/postgres, version 15.19",
            "template   3f9a1c2b7d8e  reused",
            f"clones     {clones}",
            "tests      transaction 6, database 3",
            "warm pool  3 taken, 1 waited, 4 ms in all",
        ]
    )
    assert "s3cret" not in result.stdout.str()
    assert result.stdout.str().count("- sqlsandbox -") == 1


def test_summary_can_be_turned_off(pytester: pytest.Pytester, make_project: MakeProject) -> None:
    make_project(conftest=RECORDING_CONFTEST, test_x=TESTS)
    result = pytester.runpytest("--sqlsandbox-no-summary")
    result.assert_outcomes(passed=9)
    assert "- sqlsandbox -" not in result.stdout.str()
