"""The ``unique`` fixture: no two tests get the same value, on any worker."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from sqlsandbox.pytest_plugin import Unique
from sqlsandbox.pytest_plugin._unique import INTEGER_START

from .conftest import MakeProject

EMAIL_RE = re.compile(r"^[a-z0-9_]+@example\.com$")


def test_workers_never_overlap() -> None:
    workers = [Unique("3F9A1C77", index, 3) for index in range(3)]
    integers = [w.integer() for w in workers for _ in range(100)]
    strings = [w.string("user") for w in workers for _ in range(100)]
    assert len(set(integers)) == 300
    assert len(set(strings)) == 300
    assert min(integers) == INTEGER_START
    assert max(integers) < 2**31  # fits a 32-bit INTEGER column
    assert all(re.fullmatch(r"user_3f9a1c_[0-2]_\d+", s) for s in strings)


def test_emails_are_valid_and_take_prefix_and_domain() -> None:
    unique = Unique("abcdef")
    assert EMAIL_RE.match(unique.email())
    assert unique.email("admin", "corp.example").startswith("admin_abcdef_0_")
    assert unique.email("admin", "corp.example").endswith("@corp.example")


def test_threads_never_share_a_value() -> None:
    unique = Unique("abcdef", 1, 2)
    seen: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        values = [unique.integer() for _ in range(500)]
        with lock:
            seen.extend(values)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == len(seen) == 4000
    assert all((value - INTEGER_START) % 2 == 1 for value in seen)


def test_index_outside_the_worker_count_is_refused() -> None:
    with pytest.raises(ValueError, match=r"worker index 2 is outside 0\.\.1"):
        Unique("abcdef", 2, 2)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_values_unique_across_tests_and_workers(
    pytester: pytest.Pytester, make_project: MakeProject, tmp_path: Path, workers: list[str]
) -> None:
    out = tmp_path / "values"
    out.mkdir()
    make_project(
        test_values=f"""
        import os
        import pytest

        @pytest.fixture(scope="module")
        def module_user(unique):
            return unique.email()

        @pytest.mark.parametrize("n", range(20))
        def test_take(unique, module_user, n):
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            with open(os.path.join({str(out)!r}, f"{{worker}}-{{n}}"), "w") as fh:
                fh.write("\\n".join([str(unique.integer()), unique.string(), unique.email()]))
        """
    )
    result = pytester.runpytest_subprocess(*workers)
    result.assert_outcomes(passed=20)
    files = list(out.iterdir())
    values = [line for f in files for line in f.read_text().splitlines()]
    assert len(values) == 60
    assert len(set(values)) == 60
    if workers:
        assert {f.name.split("-")[0] for f in files} == {"gw0", "gw1"}
