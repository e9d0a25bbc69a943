from __future__ import annotations

import pytest

from sqlsandbox import ConfigError
from sqlsandbox._urls import DatabaseURL, mask_url


def test_password_never_rendered_in_masked_form() -> None:
    url = DatabaseURL.parse("postgresql+asyncpg://app:s3cr%40t@db.example:5433/shop?sslmode=off")
    assert url.password == "s3cr@t"
    assert url.masked() == "postgresql+asyncpg://app:***@db.example:5433/shop?sslmode=off"
    assert "s3cr" not in str(url) and "s3cr" not in repr(url)


def test_render_round_trips_and_switches_database_and_driver() -> None:
    raw = "postgresql://app:pw@localhost:5432/main"
    url = DatabaseURL.parse(raw)
    assert url.render() == raw
    other = url.with_database("sqlsandbox_abc").with_scheme("postgresql+psycopg")
    assert other.render() == "postgresql+psycopg://app:pw@localhost:5432/sqlsandbox_abc"
    assert (url.backend, url.driver, other.driver) == ("postgresql", None, "psycopg")


def test_unix_socket_host_in_query_is_kept() -> None:
    url = DatabaseURL.parse("postgresql://postgres@/postgres?host=/tmp/sock")
    assert url.host is None and url.query_value("host") == "/tmp/sock"
    assert url.with_database("x").render() == "postgresql://postgres@/x?host=%2Ftmp%2Fsock"


def test_sqlite_paths() -> None:
    assert DatabaseURL.parse("sqlite:///rel/dir").database == "rel/dir"
    assert DatabaseURL.parse("sqlite:////abs/dir").database == "/abs/dir"


@pytest.mark.parametrize("bad", ["not a url", "postgresql://u:pw@h:99999/db"])
def test_malformed_url_is_a_config_error_without_password(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"(Cannot parse database URL|invalid port)") as info:
        DatabaseURL.parse(bad)
    assert "pw" not in str(info.value)


def test_mask_url_never_raises_and_hides_password() -> None:
    assert mask_url("weird://user:hunter2@host:notaport/x") == "weird://user:***@host:notaport/x"
