"""PostgreSQL backend: templates, strategies, sessions, reconnection and bad input."""

from __future__ import annotations

import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from sqlsandbox import ConfigError, ProvisioningError
from sqlsandbox._urls import DatabaseURL
from sqlsandbox.servers import PostgresServer, connect_server

from .conftest import PASSWORD, unique_name


@pytest.fixture
def server(postgres_admin_url: DatabaseURL) -> Iterator[PostgresServer]:
    handle = PostgresServer(postgres_admin_url)
    try:
        yield handle
    finally:
        handle.close()


def _connect(server: PostgresServer, name: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(server.database_url(name).render(), autocommit=True)


def _shown(exc: BaseException) -> str:
    """Everything a user could see of an error: message, repr and traceback."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


# -- templates ---------------------------------------------------------------------


@pytest.mark.parametrize("strategy", [None, "wal_log", "file_copy"])
def test_clone_copies_schema_and_rows_with_each_strategy(
    server: PostgresServer, new_name: Callable[[], str], strategy: str | None
) -> None:
    if strategy and server.version_info() < (15,):
        pytest.skip("STRATEGY needs PostgreSQL 15+")
    template, clone = new_name(), new_name()
    server.create_database(template)
    server.execute(
        "CREATE TABLE parent (id serial PRIMARY KEY);"
        "CREATE TABLE child (id serial PRIMARY KEY, parent_id int NOT NULL REFERENCES parent);"
        "CREATE VIEW child_count AS SELECT count(*) AS n FROM child;"
        "INSERT INTO parent DEFAULT VALUES; INSERT INTO child (parent_id) VALUES (1);",
        database=template,
    )
    server.clone_strategy = strategy  # type: ignore[assignment]
    server.clone_database(clone, template)

    assert server.execute("SELECT n FROM child_count", database=clone) == [(1,)]
    with pytest.raises(ProvisioningError, match="foreign key constraint"):
        server.execute("INSERT INTO child (parent_id) VALUES (42)", database=clone)
    # The sequence goes on where the template left it.
    assert server.execute("INSERT INTO parent DEFAULT VALUES RETURNING id", database=clone) == [
        (2,)
    ]


def test_unknown_clone_strategy_is_a_config_error(postgres_admin_url: DatabaseURL) -> None:
    with pytest.raises(ConfigError, match=r"Unknown clone_strategy 'fast'.*wal_log, file_copy"):
        PostgresServer(postgres_admin_url, clone_strategy="fast")  # type: ignore[arg-type]


def test_clone_ends_sessions_left_on_the_template(
    server: PostgresServer, new_name: Callable[[], str]
) -> None:
    template, clone = new_name(), new_name()
    server.create_database(template)
    with _connect(server, template) as squatter:
        server.clone_database(clone, template)
        assert server.database_exists(clone)
        with pytest.raises(psycopg.OperationalError):
            squatter.execute("SELECT 1")


def test_admin_connection_never_sits_on_one_of_our_databases(
    postgres_admin_url: DatabaseURL, new_name: Callable[[], str], server: PostgresServer
) -> None:
    template = new_name()
    server.create_database(template)
    # Even a URL that names the template keeps the admin session elsewhere.
    other = PostgresServer(postgres_admin_url.with_database(template))
    try:
        assert other.admin_database == "postgres"
        other.clone_database(new_name(), template)
    finally:
        other.close()


def test_admin_connection_comes_back_after_being_terminated(
    server: PostgresServer, postgres_admin_url: DatabaseURL
) -> None:
    server.list_databases()
    with psycopg.connect(postgres_admin_url.render(), autocommit=True) as killer:
        killed = killer.execute(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
            "WHERE application_name = 'sqlsandbox' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed and killed[0] >= 1
    assert isinstance(server.list_databases(), list)


def test_list_escapes_like_wildcards(server: PostgresServer, new_name: Callable[[], str]) -> None:
    base = unique_name()
    underscore, letter = f"{base}_a", f"{base}xa"
    for name in (underscore, letter):
        server.create_database(name)
    try:
        assert server.list_databases(prefix=f"{base}_") == [underscore]
    finally:
        for name in (underscore, letter):
            server.drop_database(name)


def test_execute_in_another_database_and_version(
    server: PostgresServer, new_name: Callable[[], str]
) -> None:
    name = new_name()
    server.create_database(name)
    assert server.execute("SELECT current_database()", database=name) == [(name,)]
    assert server.execute("SELECT current_database()") == [("postgres",)]
    assert server.execute("SELECT %s::int + 1", (41,)) == [(42,)]
    assert server.execute("SET application_name = 'x'") == []
    major = server.version_info()[0]
    assert server.version().startswith(str(major))


def test_driver_in_scheme_and_unix_socket(server: PostgresServer) -> None:
    sockets = server.execute("SHOW unix_socket_directories")[0][0]
    directory = sockets.split(",")[0].strip()
    if not directory or not Path(directory).is_dir():
        pytest.skip("the PostgreSQL server has no unix socket on this machine")
    port = server.url.port or 5432
    via_socket = connect_server(
        f"postgresql+asyncpg://{server.url.username}@/postgres?host={directory}&port={port}"
        "&prepared_statement_cache_size=0"
    )
    try:
        assert via_socket.version() == server.version()
        assert via_socket.database_url("sqlsandbox_x").scheme == "postgresql+asyncpg"
    finally:
        via_socket.close()


def test_user_without_createdb_gets_told_what_to_grant(
    server: PostgresServer, postgres_admin_url: DatabaseURL, new_name: Callable[[], str]
) -> None:
    role = f"sqlsandbox_role_{uuid.uuid4().hex[:8]}"
    server.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
    weak = PostgresServer(postgres_admin_url.replace(username=role, password=None))
    try:
        with pytest.raises(
            ProvisioningError,
            match=rf"permission denied to create database\. User '{role}' lacks a privilege "
            r"this needs: the CREATEDB attribute \(ALTER ROLE \.\.\. CREATEDB\)\. Grant it, "
            r"or use a user that has it in --sqlsandbox-url / SQLSANDBOX_URL\.",
        ):
            weak.create_database(unique_name())
        # Ending a superuser's sessions needs more than a plain role has.
        name = new_name()
        server.create_database(name)
        with _connect(server, name) as _superuser_session:
            with pytest.raises(
                ProvisioningError,
                match=rf"Could not terminate connections to '{name}' on .*: "
                rf"(must be a superuser|permission denied).*\. User '{role}' lacks a privilege "
                r"this needs: membership in pg_signal_backend "
                r"\(GRANT pg_signal_backend TO \.\.\.\)",
            ):
                weak.terminate_connections(name)
    finally:
        weak.close()
        server.execute(f"DROP ROLE {role}")


def test_a_session_ended_mid_statement_asks_whether_the_server_runs(
    server: PostgresServer, new_name: Callable[[], str]
) -> None:
    name = new_name()
    server.create_database(name)
    # What a server shutdown or an admin's pg_terminate_backend does to a session.
    with pytest.raises(
        ProvisioningError,
        match=rf"Could not run SQL in database '{name}' on .*: terminating connection due to "
        r"administrator command\. The server closed the connection: is it still running",
    ):
        server.execute("SELECT pg_terminate_backend(pg_backend_pid())", database=name)
    assert server.database_exists(name)  # the admin connection is unharmed


# -- bad input -------------------------------------------------------------------


def test_unreachable_server() -> None:
    server = PostgresServer(f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/postgres")
    with pytest.raises(ProvisioningError) as caught:
        server.version()
    message = str(caught.value)
    assert message.startswith(
        "Cannot connect to PostgreSQL at postgresql://postgres:***@127.0.0.1:1/postgres: "
    )
    assert "Connection refused" in message
    assert "Is the server running?" in message and "SQLSANDBOX_URL" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert PASSWORD not in _shown(caught.value)


def test_wrong_password(password_postgres: DatabaseURL) -> None:
    admin = PostgresServer(password_postgres)
    role = f"sqlsandbox_role_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right-{PASSWORD}'")
    try:
        wrong = PostgresServer(password_postgres.replace(username=role, password=PASSWORD))
        with pytest.raises(
            ProvisioningError,
            match=rf'password authentication failed for user "{role}"\. '
            r"Check the user name and password in --sqlsandbox-url / SQLSANDBOX_URL",
        ) as caught:
            wrong.list_databases()
        assert PASSWORD not in _shown(caught.value)
        right = PostgresServer(
            password_postgres.replace(username=role, password=f"right-{PASSWORD}")
        )
        assert right.database_exists("postgres")
        right.close()
    finally:
        admin.execute(f"DROP ROLE {role}")
        admin.close()


def test_unknown_role(postgres_admin_url: DatabaseURL) -> None:
    server = PostgresServer(
        postgres_admin_url.replace(username="sqlsandbox_nobody", password=PASSWORD)
    )
    with pytest.raises(
        ProvisioningError, match=r'role "sqlsandbox_nobody" does not exist\. Check the user name'
    ) as caught:
        server.max_connections()
    assert PASSWORD not in _shown(caught.value)


def test_missing_database(postgres_admin_url: DatabaseURL) -> None:
    url = postgres_admin_url.replace(database="no_such_db_here", password=PASSWORD)
    server = PostgresServer(url)
    with pytest.raises(
        ProvisioningError,
        match=r'database "no_such_db_here" does not exist\. Create that database or name an '
        r"existing one in the URL path \(for example /postgres\)",
    ) as caught:
        server.version()
    assert PASSWORD not in _shown(caught.value)


def test_missing_driver(monkeypatch: pytest.MonkeyPatch, postgres_admin_url: DatabaseURL) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match=r"pip install 'sqlsandbox\[postgres\]'"):
        connect_server(postgres_admin_url)
