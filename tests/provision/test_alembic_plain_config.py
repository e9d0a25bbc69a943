"""A cached start fingerprints Alembic migrations without importing alembic.

The plain ``alembic.ini`` read by ``AlembicSource.plain_locations`` must name
exactly the files alembic itself would; anything unusual goes to alembic.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sqlsandbox.provision import TemplateSpec
from sqlsandbox.provision._sources import AlembicSource

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "benchmarks" / "schema"


def _project(tmp_path: Path, ini: str) -> Path:
    shutil.copytree(SCHEMA / "migrations", tmp_path / "db" / "migrations")
    (tmp_path / "alembic.ini").write_text(textwrap.dedent(ini))
    return tmp_path


def _inputs(root: Path, *, plain: bool) -> list[tuple[str, bytes]]:
    source = AlembicSource(TemplateSpec(migrate="alembic", root=root))
    if not plain:
        source.plain_locations = lambda: None  # type: ignore[method-assign]
    return list(source.inputs())


@pytest.mark.parametrize(
    "ini",
    [
        "[alembic]\nscript_location = %(here)s/db/migrations\n",
        "[alembic]\nscript_location = db/migrations\n",
        "[alembic]\nscript_location = ./db/migrations\nprepend_sys_path = .\npath_separator = os\n",
    ],
    ids=["here", "relative", "dot-relative"],
)
def test_plain_config_names_the_files_alembic_names(tmp_path: Path, ini: str) -> None:
    root = _project(tmp_path, ini)
    assert AlembicSource(TemplateSpec(migrate="alembic", root=root)).plain_locations() is not None
    plain = _inputs(root, plain=True)
    assert [name for name, _ in plain][:2] == [
        "alembic:env.py",
        "alembic:versions/0001_customers.py",
    ]
    assert plain == _inputs(root, plain=False)


@pytest.mark.parametrize(
    "ini",
    [
        "[alembic]\nscript_location = db/migrations\n"
        "version_locations = %(here)s/db/migrations/versions\n",
        "[alembic]\nscript_location = myapp:migrations\n",
        "[alembic]\nscript_location = missing\n",
        "[other]\nscript_location = db/migrations\n",
    ],
    ids=["version-locations", "package-resource", "missing-folder", "no-alembic-section"],
)
def test_anything_unusual_is_left_to_alembic(tmp_path: Path, ini: str) -> None:
    root = _project(tmp_path, ini)
    assert AlembicSource(TemplateSpec(migrate="alembic", root=root)).plain_locations() is None


def test_tool_alembic_in_pyproject_is_left_to_alembic(tmp_path: Path) -> None:
    root = _project(tmp_path, "[alembic]\nscript_location = db/migrations\n")
    (root / "pyproject.toml").write_text('[tool.alembic]\nscript_location = "db/migrations"\n')
    assert AlembicSource(TemplateSpec(migrate="alembic", root=root)).plain_locations() is None


def test_fingerprinting_does_not_import_alembic() -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from sqlsandbox.provision import TemplateSpec, compute_fingerprint

        spec = TemplateSpec(migrate="alembic", root=Path({str(SCHEMA)!r}))
        compute_fingerprint(spec, backend="postgresql", server_version="15")
        print("alembic" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
