"""url_env rendering: the sandbox database in the form each env var had."""

from __future__ import annotations

import pytest

from sqlsandbox._urls import DatabaseURL
from sqlsandbox.pytest_plugin._url_env import UrlEnv, adapt_url, render_url_env

PG = DatabaseURL.parse("postgresql://postgres:s3cret@127.0.0.1:5432/sqlsandbox_ab12_w_gw0")
PG_SOCKET = DatabaseURL.parse("postgresql://postgres@/sqlsandbox_ab12_w_gw0?host=/tmp/sqlsandbox")
MARIA = DatabaseURL.parse("mysql://root@127.0.0.1:3306/sqlsandbox_ab12_w_gw0")
SQLITE = DatabaseURL.parse("sqlite:////tmp/sqlsandbox/sqlsandbox_ab12_w_gw0.db")


@pytest.mark.parametrize(
    ("database", "original", "expected"),
    [
        pytest.param(
            PG,
            None,
            "postgresql://postgres:s3cret@127.0.0.1:5432/sqlsandbox_ab12_w_gw0",
            id="unset",
        ),
        pytest.param(
            PG,
            "postgresql+asyncpg://app:pw@db.prod:6432/app",
            "postgresql+asyncpg://postgres:s3cret@127.0.0.1:5432/sqlsandbox_ab12_w_gw0",
            id="asyncpg-kept",
        ),
        pytest.param(
            PG,
            "postgresql+psycopg://app:pw@db.prod/app?application_name=api&connect_timeout=3",
            "postgresql+psycopg://postgres:s3cret@127.0.0.1:5432/sqlsandbox_ab12_w_gw0"
            "?application_name=api&connect_timeout=3",
            id="psycopg-options-kept",
        ),
        pytest.param(
            PG,
            "postgres://app@localhost/app",
            "postgres://postgres:s3cret@127.0.0.1:5432/sqlsandbox_ab12_w_gw0",
            id="postgres-alias-kept",
        ),
        pytest.param(
            PG,
            "postgresql://app@/app?host=/var/run/postgresql&sslmode=disable",
            "postgresql://postgres:s3cret@127.0.0.1:5432/sqlsandbox_ab12_w_gw0?sslmode=disable",
            id="original-socket-dropped",
        ),
        pytest.param(
            PG_SOCKET,
            "postgresql+asyncpg://app:pw@db:5432/app",
            "postgresql+asyncpg://postgres@/sqlsandbox_ab12_w_gw0?host=%2Ftmp%2Fsqlsandbox",
            id="sandbox-socket-kept",
        ),
        pytest.param(
            PG,
            "postgresql+asyncpg",
            "postgresql+asyncpg://postgres:s3cret@127.0.0.1:5432/sqlsandbox_ab12_w_gw0",
            id="bare-scheme",
        ),
        pytest.param(
            PG,
            "host=db.prod dbname=app user=app",
            "postgresql://postgres:s3cret@127.0.0.1:5432/sqlsandbox_ab12_w_gw0",
            id="libpq-dsn-replaced",
        ),
        pytest.param(
            PG,
            "sqlite+aiosqlite:///./app.db",
            "postgresql+asyncpg://postgres:s3cret@127.0.0.1:5432/sqlsandbox_ab12_w_gw0",
            id="async-sqlite-to-async-postgres",
        ),
        pytest.param(
            PG,
            "sqlite:///./app.db?check_same_thread=false",
            "postgresql://postgres:s3cret@127.0.0.1:5432/sqlsandbox_ab12_w_gw0",
            id="sync-sqlite-to-postgres",
        ),
        pytest.param(
            MARIA,
            "mysql+aiomysql://app:pw@db/app?charset=utf8mb4",
            "mysql+aiomysql://root@127.0.0.1:3306/sqlsandbox_ab12_w_gw0?charset=utf8mb4",
            id="aiomysql-kept",
        ),
        pytest.param(
            MARIA,
            "mariadb+asyncmy://app:pw@db/app",
            "mariadb+asyncmy://root@127.0.0.1:3306/sqlsandbox_ab12_w_gw0",
            id="mariadb-asyncmy-kept",
        ),
        pytest.param(
            MARIA,
            "postgresql+asyncpg://app@db/app",
            "mysql+aiomysql://root@127.0.0.1:3306/sqlsandbox_ab12_w_gw0",
            id="async-postgres-to-async-mysql",
        ),
        pytest.param(
            SQLITE,
            "sqlite+aiosqlite:///./app.db?timeout=5",
            "sqlite+aiosqlite:////tmp/sqlsandbox/sqlsandbox_ab12_w_gw0.db?timeout=5",
            id="aiosqlite-kept",
        ),
        pytest.param(
            SQLITE,
            "postgresql+psycopg://app@db/app",
            "sqlite:////tmp/sqlsandbox/sqlsandbox_ab12_w_gw0.db",
            id="psycopg-to-sqlite",
        ),
    ],
)
def test_list_form_keeps_the_form_the_user_wrote(
    database: DatabaseURL, original: str | None, expected: str
) -> None:
    assert render_url_env(database, "{url}", original) == expected


def test_template_form_renders_every_placeholder() -> None:
    template = "{driver}|{host}|{port}|{user}|{password}|{database}"
    assert render_url_env(PG, template) == (
        "postgresql|127.0.0.1|5432|postgres|s3cret|sqlsandbox_ab12_w_gw0"
    )
    # Absent parts are empty; a socket directory is the host.
    assert render_url_env(PG_SOCKET, template) == (
        "postgresql|/tmp/sqlsandbox||postgres||sqlsandbox_ab12_w_gw0"
    )
    assert render_url_env(SQLITE, "{database}") == "/tmp/sqlsandbox/sqlsandbox_ab12_w_gw0.db"


def test_template_driver_and_url_follow_the_original() -> None:
    assert render_url_env(PG, "{driver}", "postgresql+asyncpg") == "postgresql+asyncpg"
    assert render_url_env(PG, "db={url}", "postgresql+psycopg://x@y/z") == (
        "db=postgresql+psycopg://postgres:s3cret@127.0.0.1:5432/sqlsandbox_ab12_w_gw0"
    )


def test_hide_password_is_safe_to_print() -> None:
    shown = render_url_env(
        PG, "{url} {password}", "postgresql+asyncpg://a:b@c/d", hide_password=True
    )
    assert "s3cret" not in shown
    assert shown == ("postgresql+asyncpg://postgres:***@127.0.0.1:5432/sqlsandbox_ab12_w_gw0 ***")


def test_adapt_url_returns_the_database_when_nothing_to_keep() -> None:
    assert adapt_url(PG, None) is PG
    assert adapt_url(PG, "   ") is PG


def test_url_env_points_repoints_and_restores() -> None:
    environ = {
        "DATABASE_URL": "postgresql+asyncpg://app:pw@prod/app",
        "SYNC_URL": "postgresql+psycopg://app:pw@prod/app",
        "OTHER": "untouched",
    }
    url_env = UrlEnv({"DATABASE_URL": "{url}", "SYNC_URL": "{url}", "PGPORT": "{port}"}, environ)
    url_env.point(PG)
    assert environ["DATABASE_URL"].startswith("postgresql+asyncpg://postgres:s3cret@127.0.0.1")
    assert environ["SYNC_URL"].startswith("postgresql+psycopg://postgres:s3cret@127.0.0.1")
    assert environ["PGPORT"] == "5432"
    # A test with its own database: still rendered from what the user wrote.
    own = PG.with_database("sqlsandbox_ab12_t_1")
    url_env.point(own)
    assert environ["DATABASE_URL"].endswith("/sqlsandbox_ab12_t_1")
    assert environ["DATABASE_URL"].startswith("postgresql+asyncpg://")
    url_env.restore()
    assert environ == {
        "DATABASE_URL": "postgresql+asyncpg://app:pw@prod/app",
        "SYNC_URL": "postgresql+psycopg://app:pw@prod/app",
        "OTHER": "untouched",
    }
    url_env.restore()  # a second restore changes nothing
    assert "PGPORT" not in environ


def test_values_for_display_before_pointing() -> None:
    url_env = UrlEnv({"DATABASE_URL": "{url}"}, {"DATABASE_URL": "postgresql+asyncpg://a@b/c"})
    assert url_env.values(PG, hide_password=True) == {
        "DATABASE_URL": "postgresql+asyncpg://postgres:***@127.0.0.1:5432/sqlsandbox_ab12_w_gw0"
    }
