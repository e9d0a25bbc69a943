"""Acceptance: examples/real_patterns passes serially, in parallel and in random order.

The example's suite uses the patterns real suites have (a session-scoped
autouse fixture committing a superuser and sharing its Session, a
module-scoped TestClient, hard-coded ids, advisory locks, PREPARE, LISTEN,
SET) and an app configured by parts through pydantic-settings with an .env
file. Its only sqlsandbox-specific part is ``[tool.sqlsandbox]``. Each run is
a real pytest process of this venv's Python, from the checkout's root.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sqlsandbox._urls import DatabaseURL

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "examples/real_patterns"
TESTS = 24
# The app's settings by parts: never taken from the outer environment.
_APP_SETTINGS = ("POSTGRES_", "DATABASE_URL", "FIRST_SUPERUSER")


@pytest.fixture
def example_env(postgres_admin_url: DatabaseURL, inner_registry: str) -> dict[str, str]:
    """This process's environment without the outer run's pytest and sqlsandbox settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_", "SQLSANDBOX_", *_APP_SETTINGS))
    }
    env["SQLSANDBOX_URL"] = postgres_admin_url.render()
    env["SQLSANDBOX_REGISTRY_DATABASE"] = inner_registry
    return env


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="serial"),
        pytest.param(["-n", "2"], id="xdist"),
        pytest.param(["-p", "random_order", "--random-order"], id="random-order"),
        pytest.param(
            ["-n", "2", "-p", "random_order", "--random-order-bucket=global"],
            id="xdist-random-global",
        ),
    ],
)
def test_real_patterns_pass(example_env: dict[str, str], args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", EXAMPLE, "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=example_env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.OK, output
    assert f"{TESTS} passed" in result.stdout.splitlines()[-1], output
    assert re.search(r"^-+ sqlsandbox -+$", result.stdout, re.MULTILINE), output
    if "-n" not in args:
        # The header shows the parts the app reads, pointing at this process's database.
        header = re.search(r"^sqlsandbox: POSTGRES_DB=sqlsandbox_\w+$", result.stdout, re.M)
        assert header is not None, output
    # The local development values in .env were never used.
    assert "db.example.invalid" not in output
