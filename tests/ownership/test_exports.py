"""The public names of the ownership layer are exactly what the modules export."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


SRC = Path(sqlsandbox.__file__).parent


def _private_names_taken(path: Path) -> list[str]:
    """Private names *path* takes from another module: ``from ._x import _y`` or ``_x._y``."""
    tree = ast.parse(path.read_text(), str(path))
    modules = set()  # sibling modules imported whole: ``from . import _reset``
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            for alias in node.names:
                if not node.module:
                    modules.add(alias.asname or alias.name)
                elif alias.name.startswith("_"):
                    found.append(f"{path.name}: from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
        ):
            found.append(f"{path.name}: {node.value.id}.{node.attr}")
    return found


def test_ownership_modules_share_only_documented_names() -> None:
    """What one module of the layer uses of another is in that module's ``__all__``."""
    found = [
        f for path in sorted((SRC / "ownership").glob("*.py")) for f in _private_names_taken(path)
    ]
    assert found == []


@pytest.mark.parametrize("layer", ["drivers", "pytest_plugin", "cli"])
def test_layers_above_use_the_ownership_package_not_its_private_modules(layer: str) -> None:
    found = []
    for path in sorted((SRC / layer).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ownership._"):
                found.append(f"{layer}/{path.name}: from ..{node.module} import ...")
    assert found == []
