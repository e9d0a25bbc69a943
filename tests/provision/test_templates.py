"""Templates from each migration source, on every backend; reuse and rebuild by fingerprint."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sqlsandbox import ConfigError
from sqlsandbox.provision import Provisioner, TemplateSpec, compute_fingerprint, parse_name
from sqlsandbox.servers import Server

from .conftest import SERIAL, query, write_sql_project

MakeProvisioner = Callable[..., Provisioner]


def _module(root: Path, body: str) -> str:
    """Write a module with a unique name under *root*; return its name."""
    name = f"mod_{uuid.uuid4().hex[:10]}"
    (root / f"{name}.py").write_text(body)
    return name


def test_sql_source_builds_a_template_that_clones_carry(
    make_provisioner: MakeProvisioner, backend: str, tmp_path: Path
) -> None:
    write_sql_project(tmp_path, backend)
    messages: list[str] = []
    provisioner = make_provisioner(on_progress=messages.append)
    template = provisioner.template(TemplateSpec(migrate="sql:sql", root=tmp_path))
    assert template.built
    assert parse_name(template.name) is not None
    assert parse_name(template.name).kind == "tpl"  # type: ignore[union-attr]
    # The progress names each migration before it runs.
    assert any("running migration 1/2: 001_users.sql" in m for m in messages)
    assert any("running migration 2/2: 002_orders.sql" in m for m in messages)
    with provisioner.acquire("worker") as lease:
        assert lease.name.startswith(f"sqlsandbox_{template.fingerprint.short}_worker_")
        assert query(lease.url, "SELECT id, name FROM users ORDER BY id") == [
            (1, "ada"),
            (7, "grace"),
        ]


def test_same_fingerprint_reuses_the_template_across_provisioners(
    make_provisioner: MakeProvisioner, backend: str, tmp_path: Path
) -> None:
    write_sql_project(tmp_path, backend)
    spec = TemplateSpec(migrate="sql:sql", root=tmp_path)
    first = make_provisioner().template(spec)
    messages: list[str] = []
    second = make_provisioner(on_progress=messages.append).template(spec)
    assert first.built and not second.built
    assert second.name == first.name
    assert messages == [f"reusing template {first.name} (sql:sql)"]


def test_changed_migration_builds_a_new_template_and_drops_the_old(
    make_provisioner: MakeProvisioner, server: Server, backend: str, tmp_path: Path
) -> None:
    write_sql_project(tmp_path, backend)
    spec = TemplateSpec(migrate="sql:sql", root=tmp_path)
    earlier_run = make_provisioner()
    old = earlier_run.template(spec)
    earlier_run.close()
    (tmp_path / "sql" / "003_more.sql").write_text("CREATE TABLE more_things (x INT);\n")
    new = make_provisioner(keep_templates=1).template(spec)
    assert new.built
    assert new.fingerprint != old.fingerprint
    assert ("sql:003_more.sql" in dict(new.fingerprint.parts)) and not any(
        name == "sql:003_more.sql" for name, _ in old.fingerprint.parts
    )
    # keep_templates=1: the superseded template nobody uses is gone.
    assert server.database_exists(new.name)
    assert not server.database_exists(old.name)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_old_template_in_use_by_a_live_run_is_kept(
    make_provisioner: MakeProvisioner, server: Server, backend: str, tmp_path: Path
) -> None:
    write_sql_project(tmp_path, backend)
    spec = TemplateSpec(migrate="sql:sql", root=tmp_path)
    user = make_provisioner()
    old = user.template(spec)
    (tmp_path / "sql" / "003_more.sql").write_text("CREATE TABLE more_things (x INT);\n")
    make_provisioner(keep_templates=1).template(spec)
    assert server.database_exists(old.name)
    with user.acquire("test") as lease:
        assert query(lease.url, "SELECT count(*) FROM users") == [(2,)]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_callable_source_receives_the_template_url(
    make_provisioner: MakeProvisioner, backend: str, tmp_path: Path, kind: str
) -> None:
    prefix = "async " if kind == "async" else ""
    module = _module(
        tmp_path,
        "from sqlsandbox._urls import DatabaseURL\n"
        "from sqlsandbox.provision._dbapi import connect, run_script\n"
        "SEEN = []\n"
        f"{prefix}def migrate(url):\n"
        "    SEEN.append(url)\n"
        "    parsed = DatabaseURL.parse(url)\n"
        "    conn = connect(parsed)\n"
        f"    run_script(conn, parsed.backend, 'CREATE TABLE things (id {SERIAL[backend]})')\n"
        "    conn.commit()\n"
        "    conn.close()\n",
    )
    provisioner = make_provisioner()
    template = provisioner.template(TemplateSpec(migrate=f"{module}:migrate", root=tmp_path))
    import sys

    seen = sys.modules[module].SEEN
    assert len(seen) == 1 and template.name in seen[0]
    with provisioner.acquire("test") as lease:
        assert query(lease.url, "SELECT count(*) FROM things") == [(0,)]


def test_callable_fingerprint_follows_its_module_source(tmp_path: Path) -> None:
    backend = "postgresql"
    module = _module(tmp_path, "def migrate(url):\n    pass\n")
    spec = TemplateSpec(migrate=f"{module}:migrate", root=tmp_path)
    before = compute_fingerprint(spec, backend=backend, server_version="1")
    again = compute_fingerprint(spec, backend=backend, server_version="1")
    (tmp_path / f"{module}.py").write_text("def migrate(url):\n    return None\n")
    after = compute_fingerprint(spec, backend=backend, server_version="1")
    other_server = compute_fingerprint(spec, backend=backend, server_version="2")
    assert before == again
    assert after.value != before.value
    assert other_server.value != after.value


def test_metadata_source_runs_create_all(
    make_provisioner: MakeProvisioner, backend: str, tmp_path: Path
) -> None:
    module = _module(
        tmp_path,
        "from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table\n"
        "metadata = MetaData()\n"
        "Table('authors', metadata, Column('id', Integer, primary_key=True),"
        " Column('name', String(40)))\n"
        "Table('books', metadata, Column('id', Integer, primary_key=True),"
        " Column('author_id', ForeignKey('authors.id')))\n"
        "class Base:\n    metadata = metadata\n",
    )
    messages: list[str] = []
    provisioner = make_provisioner(on_progress=messages.append)
    spec = TemplateSpec(migrate=f"metadata:{module}:Base.metadata", root=tmp_path)
    provisioner.template(spec)
    assert any(f"create_all {module}:Base.metadata (2 tables)" in m for m in messages)
    with provisioner.acquire("test") as lease:
        assert query(lease.url, "SELECT count(*) FROM books") == [(0,)]


def test_metadata_fingerprint_is_the_ddl(tmp_path: Path) -> None:
    module = _module(
        tmp_path,
        "from sqlalchemy import Column, Integer, MetaData, String, Table\n"
        "metadata = MetaData()\n"
        "Table('t', metadata, Column('id', Integer, primary_key=True), Column('s', String(5)))\n",
    )
    spec = TemplateSpec(migrate=f"metadata:{module}:metadata", root=tmp_path)
    first = compute_fingerprint(spec, backend="postgresql", server_version="15")
    import sys

    from sqlalchemy import Column, Integer

    sys.modules[module].metadata.tables["t"].append_column(Column("n", Integer))
    second = compute_fingerprint(spec, backend="postgresql", server_version="15")
    assert first.value != second.value
    assert dict(first.parts)["table:t"] != dict(second.parts)["table:t"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_metadata_source_rejects_what_is_not_metadata(
    make_provisioner: MakeProvisioner, tmp_path: Path
) -> None:
    module = _module(tmp_path, "thing = 42\n")
    with pytest.raises(ConfigError, match=r"names a int, not a sqlalchemy MetaData"):
        make_provisioner().template(TemplateSpec(migrate=f"metadata:{module}:thing", root=tmp_path))


def test_seed_runs_into_the_template_and_sequences_move_past_its_ids(
    make_provisioner: MakeProvisioner, backend: str, tmp_path: Path
) -> None:
    write_sql_project(tmp_path, backend)
    module = _module(
        tmp_path,
        "from sqlsandbox._urls import DatabaseURL\n"
        "from sqlsandbox.provision._dbapi import connect, run_script\n"
        "def seed(url):\n"
        "    parsed = DatabaseURL.parse(url)\n"
        "    conn = connect(parsed)\n"
        "    run_script(conn, parsed.backend,"
        " 'INSERT INTO users (id, name) VALUES (40, \\'linus\\');"
        " INSERT INTO orders (id, user_id) VALUES (500, 40)')\n"
        "    conn.commit()\n"
        "    conn.close()\n",
    )
    provisioner = make_provisioner()
    spec = TemplateSpec(migrate="sql:sql", seed=f"{module}:seed", root=tmp_path)
    assert spec.mode == "schema+data"
    provisioner.template(spec)
    with provisioner.acquire("test") as lease:
        # Inserts without explicit ids continue after the seeded ones.
        query(lease.url, "INSERT INTO users (name) VALUES ('new')")
        query(lease.url, "INSERT INTO orders (user_id) VALUES (1)")
        assert query(lease.url, "SELECT max(id) FROM users") == [(41,)]
        assert query(lease.url, "SELECT max(id) FROM orders") == [(501,)]


def test_setup_modes_shape_the_template(
    make_provisioner: MakeProvisioner, backend: str, tmp_path: Path
) -> None:
    write_sql_project(tmp_path, backend)
    module = _module(tmp_path, "def seed(url):\n    raise RuntimeError('must not run')\n")
    provisioner = make_provisioner()
    schema = provisioner.template(
        TemplateSpec(migrate="sql:sql", seed=f"{module}:seed", setup="schema", root=tmp_path)
    )
    empty = provisioner.template(TemplateSpec(migrate="sql:sql", setup="empty", root=tmp_path))
    assert schema.fingerprint != empty.fingerprint
    with provisioner.acquire("test", template=schema) as lease:
        assert query(lease.url, "SELECT count(*) FROM users") == [(2,)]
    with provisioner.acquire("test", template=empty) as lease:
        tables = (
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            if backend == "sqlite"
            else "SELECT count(*) FROM information_schema.tables WHERE table_name = 'users'"
            + (" AND table_schema = DATABASE()" if backend == "mariadb" else "")
        )
        assert query(lease.url, tables) == [(0,)]


def test_schema_and_data_without_seed_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'schema\+data' needs a seed callable"):
        TemplateSpec(migrate="sql:sql", setup="schema+data", root=tmp_path)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_unknown_migrate_setting_lists_the_forms(
    make_provisioner: MakeProvisioner, tmp_path: Path
) -> None:
    with pytest.raises(
        ConfigError,
        match=r"Invalid migrate setting 'flyway': use 'alembic', 'alembic:path/to/alembic.ini', "
        r"'pkg.module:function', 'sql:.* \(--sqlsandbox-migrate, SQLSANDBOX_MIGRATE",
    ):
        make_provisioner().template(TemplateSpec(migrate="flyway", root=tmp_path))
    with pytest.raises(
        ConfigError,
        match=r"Invalid migrate setting 'alembic:': write 'alembic' \(alembic.ini at the project "
        r"root\) or 'alembic:path/to/alembic.ini'",
    ):
        make_provisioner().template(TemplateSpec(migrate="alembic:", root=tmp_path))


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_callable_setting_that_names_no_function_says_what_it_names(
    make_provisioner: MakeProvisioner, tmp_path: Path
) -> None:
    module = _module(tmp_path, "migrate = 'not a function'\n")
    with pytest.raises(
        ConfigError,
        match=rf"migrate = '{module}:migrate' does not name a callable: it names a str\. Point "
        r"it at a function .* in --sqlsandbox-migrate, SQLSANDBOX_MIGRATE or "
        r"\[tool.sqlsandbox\] migrate\.",
    ):
        make_provisioner().template(TemplateSpec(migrate=f"{module}:migrate", root=tmp_path))


def test_a_module_inside_a_missing_package_says_how_to_see_why(tmp_path: Path) -> None:
    missing = f"nopkg_{uuid.uuid4().hex[:8]}"
    spec = TemplateSpec(migrate=f"{missing}.steps:migrate", root=tmp_path)
    with pytest.raises(
        ConfigError,
        match=rf"Cannot find module '{missing}\.steps' named by migrate = .*: No module named "
        rf"'{missing}'\. Check the spelling, and run python -c 'import {missing}\.steps' in ",
    ):
        compute_fingerprint(spec, backend="sqlite", server_version="3")


def test_fingerprint_extra_globs_invalidate(tmp_path: Path) -> None:
    write_sql_project(tmp_path, "postgresql")
    (tmp_path / "functions.sql").write_text("-- v1\n")
    spec = TemplateSpec(migrate="sql:sql", root=tmp_path, fingerprint_extra=("*.sql",))
    first = compute_fingerprint(spec, backend="postgresql", server_version="15")
    (tmp_path / "functions.sql").write_text("-- v2\n")
    second = compute_fingerprint(spec, backend="postgresql", server_version="15")
    assert first.value != second.value
    with pytest.raises(ConfigError, match=r"fingerprint_extra pattern 'nothing/\*' matches no"):
        compute_fingerprint(
            TemplateSpec(root=tmp_path, fingerprint_extra=("nothing/*",)),
            backend="postgresql",
            server_version="15",
        )


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_template_dropped_by_hand_is_rebuilt(
    make_provisioner: MakeProvisioner, server: Server, backend: str, tmp_path: Path
) -> None:
    write_sql_project(tmp_path, backend)
    spec = TemplateSpec(migrate="sql:sql", root=tmp_path)
    first = make_provisioner()
    old = first.template(spec)
    first.close()
    server.drop_database(old.name)
    rebuilt = make_provisioner().template(spec)
    assert rebuilt.built and rebuilt.name != old.name
    assert [r.name for r in make_provisioner().registry.databases(kind="tpl")] == [rebuilt.name]
