"""Server discovery: which backend a URL gets, and the errors for URLs that cannot work."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import sqlsandbox.servers
from sqlsandbox import ConfigError, ProvisioningError
from sqlsandbox._urls import DatabaseURL
from sqlsandbox.servers import (
    BUILTIN_BACKENDS,
    MariaDBServer,
    PostgresServer,
    Server,
    SQLiteServer,
    connect_server,
    open_server,
)
from sqlsandbox.servers._errors import connect_error, driver_detail

from .conftest import PASSWORD


@pytest.mark.parametrize(
    ("url", "cls"),
    [
        ("postgresql://u@h/db", PostgresServer),
        ("postgres://u@h/db", PostgresServer),
        ("postgresql+asyncpg://u@h/db", PostgresServer),
        ("postgresql+psycopg://u@h/db", PostgresServer),
        ("mysql://root@h/mysql", MariaDBServer),
        ("mariadb://root@h/mysql", MariaDBServer),
        ("mysql+aiomysql://root@h/mysql", MariaDBServer),
        ("mariadb+asyncmy://root@h/mysql", MariaDBServer),
        ("sqlite", SQLiteServer),
        ("sqlite+aiosqlite", SQLiteServer),
        ("sqlite:///some/dir", SQLiteServer),
        ("sqlite+aiosqlite:////abs/dir", SQLiteServer),
    ],
)
def test_scheme_picks_the_backend(url: str, cls: type[Server]) -> None:
    server = connect_server(url)  # lazy: nothing is contacted yet
    try:
        assert type(server) is cls
        assert server.backend in BUILTIN_BACKENDS
    finally:
        server.close()


def test_backend_keeps_the_driver_for_database_urls() -> None:
    server = connect_server(f"postgresql+asyncpg://app:{PASSWORD}@db.example:5433/app")
    url = server.database_url("sqlsandbox_abc")
    assert url.render() == f"postgresql+asyncpg://app:{PASSWORD}@db.example:5433/sqlsandbox_abc"
    assert PASSWORD not in repr(server) and PASSWORD not in str(url)


def test_unknown_scheme_names_masked_url_and_known_schemes() -> None:
    with pytest.raises(ConfigError) as caught:
        connect_server(f"oracle://scott:{PASSWORD}@db/orcl")
    message = str(caught.value)
    assert "Unknown database URL scheme 'oracle' in oracle://scott:***@db/orcl" in message
    assert "postgresql://" in message and "mysql://" in message and "sqlite" in message
    assert "SQLSANDBOX_URL" in message
    assert PASSWORD not in message


def test_unparseable_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"Cannot parse database URL 'localhost:5432'"):
        connect_server("localhost:5432")


def test_backend_options_are_passed_and_checked(postgres_admin_url: DatabaseURL) -> None:
    server = connect_server(postgres_admin_url, clone_strategy="file_copy")
    assert isinstance(server, PostgresServer) and server.clone_strategy == "file_copy"
    with pytest.raises(
        ConfigError,
        match=r"Invalid option for the sqlite server at .*'clone_strategy'\. SQLiteServer "
        r"takes no options: remove them\.",
    ):
        connect_server("sqlite", clone_strategy="file_copy")
    with pytest.raises(
        ConfigError,
        match=r"Invalid option for the postgresql server at .*'clone_stratgy'\. "
        r"PostgresServer takes only clone_strategy=, connect_timeout=, clone_attempts=: "
        r"remove the others or fix their spelling\.",
    ):
        connect_server(postgres_admin_url, clone_stratgy="file_copy")


def test_a_backend_class_refuses_another_engines_url() -> None:
    with pytest.raises(ConfigError, match=r"PostgresServer cannot serve mysql://root@h/mysql"):
        PostgresServer("mysql://root@h/mysql")


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [
        ("psycopg", "postgresql+asyncpg://u@h/db", "postgres"),
        ("pymysql", "mysql+aiomysql://root@h/mysql", "mysql"),
    ],
)
def test_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, url: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(
        ConfigError, match=rf"needs the '{module}' package.*pip install 'sqlsandbox\[{extra}\]'"
    ):
        connect_server(url)


def test_open_server_checks_the_server_answers() -> None:
    with pytest.raises(
        ProvisioningError,
        match=r"Cannot connect to PostgreSQL at postgresql://u:\*\*\*@127\.0\.0\.1:1/db: .*"
        r"Is the server running\?",
    ) as caught:
        open_server(f"postgresql://u:{PASSWORD}@127.0.0.1:1/db")
    assert PASSWORD not in str(caught.value)


def test_open_server_with_a_url(postgres_admin_url: DatabaseURL, tmp_path: Path) -> None:
    server = open_server(postgres_admin_url)
    try:
        assert isinstance(server, PostgresServer)
    finally:
        server.close()
    sqlite = open_server(f"sqlite:///{tmp_path}")
    assert isinstance(sqlite, SQLiteServer) and sqlite.directory == tmp_path


@pytest.mark.parametrize("url", [None, "", "  "])
def test_open_server_without_url_uses_the_embedded_postgres(
    monkeypatch: pytest.MonkeyPatch,
    postgres_admin_url: DatabaseURL,
    tmp_path: Path,
    url: str | None,
) -> None:
    # Starting the embedded server is test_embedded.py's subject; here only the routing.
    from sqlsandbox.servers import _embedded

    asked: list[Path | None] = []

    def fake_embedded(*, cache_dir: Path | None = None) -> DatabaseURL:
        asked.append(cache_dir)
        return postgres_admin_url

    monkeypatch.setattr(_embedded, "ensure_embedded_server", fake_embedded)
    server = open_server(url, cache_dir=tmp_path)
    try:
        assert isinstance(server, PostgresServer) and server.url == postgres_admin_url
        assert asked == [tmp_path]
    finally:
        server.close()


def test_public_names() -> None:
    assert set(sqlsandbox.servers.__all__) == {
        "BUILTIN_BACKENDS",
        "DATABASE_PREFIX",
        "MariaDBServer",
        "PostgresServer",
        "SQLiteServer",
        "Server",
        "check_owned_name",
        "connect_server",
        "open_server",
    }
    assert BUILTIN_BACKENDS == ("postgresql", "mariadb", "sqlite")


# -- error wording helpers ---------------------------------------------------------


def test_driver_detail_scrubs_the_password_in_raw_and_quoted_form() -> None:
    url = DatabaseURL(scheme="postgresql", username="u", password="p@ss word", host="h")
    raw = RuntimeError("bad login p@ss word\nsecond line")
    quoted = RuntimeError("dsn was postgresql://u:p%40ss%20word@h/db")
    assert driver_detail(raw, url) == "bad login ***"
    assert "p%40ss" not in driver_detail(quoted, url)


@pytest.mark.parametrize(
    ("driver_text", "fix"),
    [
        ("connection refused", "Is the server running?"),
        ('FATAL:  password authentication failed for user "u"', "Check the user name and password"),
        ("(1045, \"Access denied for user 'u'@'h' (using password: YES)\")", "Check the user"),
        ('FATAL:  database "x" does not exist', "Create that database"),
        ("something else entirely", "Check the server and --sqlsandbox-url / SQLSANDBOX_URL"),
    ],
)
def test_connect_error_gives_the_fix_for_the_cause(driver_text: str, fix: str) -> None:
    url = DatabaseURL(scheme="postgresql", username="u", password=PASSWORD, host="h")
    error = connect_error("PostgreSQL", url, RuntimeError(driver_text))
    assert str(error).startswith("Cannot connect to PostgreSQL at postgresql://u:***@h/: ")
    assert fix in str(error)
    assert "FATAL" not in str(error)
