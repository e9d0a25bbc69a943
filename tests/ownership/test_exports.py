"""The public names of the ownership layer are exactly what the modules export."""

from __future__ import annotations

import sqlsandbox
import sqlsandbox.ownership


def test_sandbox_is_exported_from_the_package() -> None:
    assert sqlsandbox.Sandbox is sqlsandbox.ownership.Sandbox
    assert "Sandbox" in sqlsandbox.__all__


def test_ownership_all_matches_its_public_attributes() -> None:
    public = {n for n in vars(sqlsandbox.ownership) if n.isidentifier() and not n.startswith("_")}
    public -= {"annotations"}
    assert set(sqlsandbox.ownership.__all__) == public
    for name in sqlsandbox.ownership.__all__:
        assert getattr(sqlsandbox.ownership, name) is not None


def test_the_ownership_layer_imports_no_database_driver() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sqlsandbox.ownership; "
        "bad = [m for m in ('psycopg', 'asyncpg', 'pymysql', 'aiomysql', 'aiosqlite', "
        "'sqlalchemy', 'psycopg2', 'sqlite3') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
