"""Provisioning errors say what failed, where, and what to do; never a password."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sqlsandbox import ProvisioningError
from sqlsandbox.provision import Budget, Provisioner, Registry, TemplateSpec
from sqlsandbox.servers import PostgresServer, Server, SQLiteServer, connect_server

from .conftest import write_sql_project

MakeProvisioner = Callable[..., Provisioner]

PASSWORD = "sqlsandboxSecret42"


@pytest.fixture
def spec(tmp_path: Path, backend: str) -> TemplateSpec:
    write_sql_project(tmp_path, backend)
    return TemplateSpec(migrate="sql:sql", root=tmp_path)


# -- the registry ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_damaged_registry_file_says_what_to_drop(server: Server, registry_name: str) -> None:
    server.create_database(registry_name)
    assert isinstance(server, SQLiteServer)
    server.path(registry_name).write_bytes(b"no sqlite here " * 200)
    with pytest.raises(
        ProvisioningError,
        match=rf"The sqlsandbox registry sqlite:///.*{registry_name}\.sqlite3 failed to open: "
        rf"file is not a database\. .*drop database '{registry_name}' while no test run uses "
        r"this server",
    ):
        Registry(server, registry_name).open()
    server.drop_database(registry_name)


@pytest.fixture
def weak_role(pg_server: Server) -> Iterator[str]:
    """A PostgreSQL role that may log in and nothing more; dropped afterwards."""
    role = f"sqlsandbox_role_{uuid.uuid4().hex[:8]}"
    pg_server.execute(f"CREATE ROLE {role} LOGIN")
    yield role
    pg_server.execute(f"DROP ROLE {role}")


def test_a_registry_the_user_may_not_write_names_the_privilege(
    pg_server: Server, weak_role: str
) -> None:
    name = f"sqlsandbox_reg_{uuid.uuid4().hex[:12]}"
    pg_server.create_database(name)
    weak = PostgresServer(pg_server.url.replace(username=weak_role, password=None))
    try:
        if pg_server.version_info() < (15,):  # type: ignore[attr-defined]
            pytest.skip("before PostgreSQL 15 every role may create tables in public")
        with pytest.raises(
            ProvisioningError,
            match=rf"The sqlsandbox registry postgresql://{weak_role}@.*/{name} failed to create "
            rf"its tables: permission denied for schema public\. User '{weak_role}' lacks a "
            rf"privilege this needs: the right to create and write tables in database '{name}'",
        ):
            Registry(weak, name).open()
    finally:
        weak.close()
        pg_server.drop_database(name)


# -- the warm pool --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_closing_the_provisioner_while_a_thread_waits_says_who_closed_it(
    make_provisioner: MakeProvisioner, spec: TemplateSpec
) -> None:
    # Room for two clones: a third acquire has to wait.
    provisioner = make_provisioner(budget=Budget(max_databases=3))
    template = provisioner.template(spec)
    provisioner.acquire("test")
    provisioner.acquire("test")
    errors: list[BaseException] = []

    def acquire() -> None:
        try:
            provisioner.acquire("test", timeout=60)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=acquire, name="late-acquirer")
    pool = provisioner._pool
    with pool._cond:
        waiter.start()
        # acquire() notifies the condition once it counts itself as a waiter.
        assert pool._cond.wait_for(lambda: any(p.waiters for p in pool._pools.values()), timeout=30)
    provisioner.close()
    waiter.join(30)
    assert len(errors) == 1 and isinstance(errors[0], ProvisioningError)
    assert str(errors[0]).startswith(
        f"The warm pool on {provisioner.server.url.masked()} is closed: Provisioner.close() was "
        f"called from thread 'MainThread' while this thread waited for a clone of template "
        f"{template.name}. The pytest plugin closes it when the session ends"
    )
    assert "create a new Provisioner" in str(errors[0])


class _CrashingServer(SQLiteServer):
    """A backend whose clone fails with an error no backend is meant to let through.

    Stands in for a bug in a backend: every real failure is a ProvisioningError already.
    """

    def _clone(self, name: str, template: str) -> None:
        raise RuntimeError(
            f"copy helper lost its way to postgresql://app:{PASSWORD}@db.internal/app\n"
            "  more lines nobody needs"
        )


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_background_clone_failure_is_scrubbed_and_retried(
    tmp_path: Path, spec: TemplateSpec, registry_name: str, cache_dir: Path
) -> None:
    server = _CrashingServer(f"sqlite:///{tmp_path / 'crashing'}")
    with Provisioner(
        server, registry_database=registry_name, cache_dir=cache_dir, warm={}
    ) as provisioner:
        template = provisioner.template(spec)
        for _attempt in range(2):  # the next acquire tries again, and fails the same way
            with pytest.raises(ProvisioningError) as caught:
                provisioner.acquire("test", timeout=60)
            message = str(caught.value)
            assert message.startswith(
                f"Cloning template {template.name} on {server.url.masked()} failed in the warm "
                "pool's background thread: RuntimeError: copy helper lost its way to "
                "postgresql://app:***@db.internal/app. "
            )
            assert message.endswith("The next acquire tries again.")
            assert "more lines" not in message
            assert PASSWORD not in message
        (stats,) = provisioner.stats()
        assert stats.misses == 2 and stats.created == 0


# -- building a template --------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_build_failing_after_the_migrations_names_the_step_and_the_fix(
    make_provisioner: MakeProvisioner, server: Server, tmp_path: Path
) -> None:
    folder = tmp_path / "sql"
    folder.mkdir()
    # A sequence owned by a text column: its value cannot be moved past the column's maximum.
    (folder / "001_codes.sql").write_text(
        "CREATE TABLE codes (code text);\n"
        "CREATE SEQUENCE codes_seq OWNED BY codes.code;\n"
        "INSERT INTO codes VALUES ('abc');\n"
    )
    provisioner = make_provisioner()
    spec = TemplateSpec(migrate="sql:sql", root=tmp_path)
    with pytest.raises(ProvisioningError) as caught:
        provisioner.template(spec)
    message = str(caught.value)
    assert message.startswith(
        f"Building the template sqlsandbox_{provisioner._builder.fingerprint(spec).short}"
    )
    assert (
        f"on {server.url.masked()} failed while moving sequences past the ids the migrations "
        "inserted:\n    InvalidTextRepresentation: invalid input syntax for type bigint"
    ) in message
    assert "Nothing was kept: the half-built template was dropped. A sequence owned by a " in (
        message
    )
    assert "OWNED BY must name an integer column" in message
    fingerprint = provisioner._builder.fingerprint(spec)
    assert server.list_databases(f"sqlsandbox_{fingerprint.short}") == []


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_failing_migration_never_shows_the_password(
    server: Server, registry_name: str, cache_dir: Path, tmp_path: Path
) -> None:
    # The test server trusts local logins, so any password gets in: it must not show.
    with_password = connect_server(server.url.replace(password=PASSWORD))
    (tmp_path / "leaky.py").write_text(
        "from sqlsandbox._urls import DatabaseURL\n"
        "def migrate(url):\n"
        "    secret = DatabaseURL.parse(url).password\n"
        "    raise RuntimeError(f'login with {secret} refused at {url}')\n"
    )
    spec = TemplateSpec(migrate="leaky:migrate", root=tmp_path)
    try:
        with Provisioner(
            with_password, registry_database=registry_name, cache_dir=cache_dir, warm={}
        ) as provisioner:
            with pytest.raises(ProvisioningError) as caught:
                provisioner.template(spec)
    finally:
        with_password.close()
    message = str(caught.value)
    assert "RuntimeError: login with *** refused at postgresql://postgres:***@" in message
    # The migration's own exception stays the cause, for its traceback; ours is clean.
    assert PASSWORD not in message and PASSWORD not in repr(caught.value)
