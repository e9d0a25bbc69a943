"""The ``alembic`` source: real projects made by ``alembic init``, sync and async env.py."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from sqlsandbox import ConfigError, ProvisioningError
from sqlsandbox.provision import Provisioner, TemplateSpec, compute_fingerprint
from sqlsandbox.provision._sources import AlembicSource, parse_source
from sqlsandbox.servers import Server

from .conftest import query

MakeProvisioner = Callable[..., Provisioner]

_REVISION = '''"""{doc}

Revision ID: {rev}
"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
{body}


def downgrade():
    pass
'''

_USERS = """    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
    )
    users = sa.table("users", sa.column("id"), sa.column("name"))
    op.bulk_insert(users, [{"id": 3, "name": "ada"}])"""

_ORDERS = """    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
    )"""

_BROKEN = """    op.execute("INSERT INTO no_such_table (x) VALUES (1)")"""


def alembic_project(root: Path, template: str, *, broken: bool = False) -> Path:
    """Create an Alembic project with ``alembic init`` and two revisions; return its root."""
    from alembic import command
    from alembic.config import Config

    root.mkdir(parents=True, exist_ok=True)
    config = Config(str(root / "alembic.ini"))
    command.init(config, str(root / "migrations"), template=template)
    versions = root / "migrations" / "versions"
    (versions / "a1_users.py").write_text(
        _REVISION.format(doc="create users", rev="a1", down=None, body=_USERS)
    )
    (versions / "b2_orders.py").write_text(
        _REVISION.format(doc="add orders", rev="b2", down="a1", body=_BROKEN if broken else _ORDERS)
    )
    return root


@pytest.mark.parametrize("template", ["generic", "async"])
def test_alembic_upgrades_the_template_to_head(
    make_provisioner: MakeProvisioner, backend: str, tmp_path: Path, template: str
) -> None:
    root = alembic_project(tmp_path / "project", template)
    messages: list[str] = []
    provisioner = make_provisioner(on_progress=messages.append)
    built = provisioner.template(TemplateSpec(migrate="alembic", root=root))
    assert built.built
    assert any("running migration 1/2: a1 (create users)" in m for m in messages)
    assert any("running migration 2/2: b2 (add orders)" in m for m in messages)
    with provisioner.acquire("test") as lease:
        assert query(lease.url, "SELECT version_num FROM alembic_version") == [("b2",)]
        # The row the migration inserted is there, and the sequence is past it.
        query(lease.url, "INSERT INTO users (name) VALUES ('grace')")
        assert query(lease.url, "SELECT id, name FROM users ORDER BY id") == [
            (3, "ada"),
            (4, "grace"),
        ]


def test_alembic_fingerprint_covers_versions_and_env(tmp_path: Path) -> None:
    root = alembic_project(tmp_path / "project", "generic")
    spec = TemplateSpec(migrate="alembic", root=root)
    first = compute_fingerprint(spec, backend="postgresql", server_version="15")
    names = {name for name, _ in first.parts}
    assert {"alembic:env.py", "alembic:versions/a1_users.py"} <= names
    env = root / "migrations" / "env.py"
    env.write_text(env.read_text() + "\n# changed\n")
    second = compute_fingerprint(spec, backend="postgresql", server_version="15")
    (root / "migrations" / "versions" / "c3_more.py").write_text(
        _REVISION.format(doc="more", rev="c3", down="b2", body="    pass")
    )
    third = compute_fingerprint(spec, backend="postgresql", server_version="15")
    assert len({first.value, second.value, third.value}) == 3


def test_alembic_failure_names_the_migration_and_keeps_nothing(
    make_provisioner: MakeProvisioner, server: Server, backend: str, tmp_path: Path
) -> None:
    root = alembic_project(tmp_path / "project", "generic", broken=True)
    provisioner = make_provisioner()
    spec = TemplateSpec(migrate="alembic", root=root)
    with pytest.raises(ProvisioningError) as caught:
        provisioner.template(spec)
    message = str(caught.value)
    assert "failed in 'b2 (add orders)' (alembic)" in message
    assert "no_such_table" in message
    assert "Nothing was kept" in message
    # Nothing usable is left: no registry row, no database of this fingerprint.
    fingerprint = provisioner._builder.fingerprint(spec)
    assert provisioner.registry.databases(fingerprint=fingerprint.value) == []
    assert server.list_databases(f"sqlsandbox_{fingerprint.short}") == []


@pytest.mark.parametrize("backend", ["sqlite"])
def test_alembic_env_logging_config_does_not_silence_other_loggers(
    make_provisioner: MakeProvisioner, tmp_path: Path
) -> None:
    root = alembic_project(tmp_path / "project", "generic")
    app_logger = logging.getLogger("myapp.orders")
    assert not app_logger.disabled
    make_provisioner().template(TemplateSpec(migrate="alembic", root=root))
    # env.py's fileConfig(disable_existing_loggers=True) is undone after the build.
    assert not app_logger.disabled


@pytest.mark.parametrize("backend", ["sqlite"])
def test_alembic_without_configuration_says_how_to_fix(
    make_provisioner: MakeProvisioner, tmp_path: Path
) -> None:
    with pytest.raises(
        ConfigError,
        match=r"no alembic.ini .* Run 'alembic init', or point migrate = "
        r"'alembic:path/to/alembic.ini' or alembic_config",
    ):
        make_provisioner().template(TemplateSpec(migrate="alembic", root=tmp_path))


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_alembic_with_a_path_uses_that_configuration(
    make_provisioner: MakeProvisioner, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    # The configuration lives below the project root, as in many monorepos.
    alembic_project(root / "db", "generic")
    provisioner = make_provisioner()
    built = provisioner.template(TemplateSpec(migrate="alembic:db/alembic.ini", root=root))
    assert built.built
    with provisioner.acquire("test") as lease:
        assert query(lease.url, "SELECT version_num FROM alembic_version") == [("b2",)]
        assert query(lease.url, "SELECT name FROM users") == [("ada",)]


def test_alembic_path_is_never_taken_for_a_callable(tmp_path: Path) -> None:
    spec = TemplateSpec(migrate="alembic:alembic.ini", root=tmp_path)
    source = parse_source("alembic:alembic.ini", spec, backend="sqlite")
    assert isinstance(source, AlembicSource)
    assert source.label == "alembic:alembic.ini"


def test_alembic_path_is_part_of_the_fingerprint(tmp_path: Path) -> None:
    root = tmp_path / "project"
    alembic_project(root, "generic")
    # A second configuration pointing at the very same scripts.
    (root / "ci.ini").write_text((root / "alembic.ini").read_text())

    def fingerprint(migrate: str) -> tuple[str, dict[str, str]]:
        spec = TemplateSpec(migrate=migrate, root=root)
        found = compute_fingerprint(spec, backend="postgresql", server_version="15")
        return found.value, dict(found.parts)

    default, _ = fingerprint("alembic")
    explicit, parts = fingerprint("alembic:alembic.ini")
    other, other_parts = fingerprint("alembic:ci.ini")
    assert "alembic:versions/a1_users.py" in parts
    assert parts["alembic:config"] != other_parts["alembic:config"]
    assert len({default, explicit, other}) == 3
    assert fingerprint("alembic:ci.ini")[0] == other  # stable


@pytest.mark.parametrize("backend", ["sqlite"])
def test_alembic_path_that_does_not_exist_names_the_setting(
    make_provisioner: MakeProvisioner, tmp_path: Path
) -> None:
    with pytest.raises(
        ConfigError,
        match=r"Alembic configuration .*nowhere\.ini does not exist: fix the path in migrate = "
        r"'alembic:nowhere\.ini' \(--sqlsandbox-migrate, SQLSANDBOX_MIGRATE or "
        r"\[tool.sqlsandbox\] migrate\); it is relative to the project root",
    ):
        make_provisioner().template(TemplateSpec(migrate="alembic:nowhere.ini", root=tmp_path))


def test_alembic_path_and_alembic_config_must_agree(tmp_path: Path) -> None:
    alembic_project(tmp_path, "generic")
    spec = TemplateSpec(migrate="alembic:alembic.ini", alembic_config="other.ini", root=tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"migrate = 'alembic:alembic.ini' and alembic_config = 'other.ini' name different "
        r"Alembic configurations .*: keep only one of them\.",
    ):
        compute_fingerprint(spec, backend="sqlite", server_version="3")
    same = TemplateSpec(migrate="alembic:alembic.ini", alembic_config="alembic.ini", root=tmp_path)
    assert compute_fingerprint(same, backend="sqlite", server_version="3")


def test_alembic_scripts_that_cannot_load_name_the_configuration(tmp_path: Path) -> None:
    root = alembic_project(tmp_path / "project", "generic")
    ini = root / "alembic.ini"
    ini.write_text(
        re.sub(r"(?m)^script_location = .*$", "script_location = %(here)s/gone", ini.read_text())
    )
    spec = TemplateSpec(migrate="alembic:alembic.ini", root=root)
    with pytest.raises(
        ConfigError,
        match=r"Cannot load the Alembic scripts of .*alembic\.ini \(script_location .*gone\): "
        r"Path doesn't exist: .*Run 'alembic -c .*alembic\.ini heads' to see the same error",
    ):
        compute_fingerprint(spec, backend="sqlite", server_version="3")
