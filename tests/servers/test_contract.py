"""The behaviour every backend promises, run against PostgreSQL, MariaDB and SQLite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sqlsandbox import ProvisioningError
from sqlsandbox.servers import Server

from .conftest import unique_name

# What a backend can do beyond the common contract.
SESSIONS = {"postgresql", "mariadb"}  # server sessions that can be counted and closed

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL)"
ROWS = "INSERT INTO items (id, name) VALUES (1, 'one'), (2, 'two')"
SELECT = "SELECT id, name FROM items ORDER BY id"


def _rows(server: Server, sql: str, database: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in server.execute(sql, database=database)]


def test_create_then_drop(server: Server, new_name: Callable[[], str]) -> None:
    name = new_name()
    assert not server.database_exists(name)
    server.create_database(name)
    assert server.database_exists(name)
    assert name in server.list_databases()
    server.drop_database(name)
    assert not server.database_exists(name)
    assert name not in server.list_databases()


def test_create_twice_says_it_exists(server: Server, new_name: Callable[[], str]) -> None:
    name = new_name()
    server.create_database(name)
    with pytest.raises(ProvisioningError, match=rf"{name}.*exists.*Drop it first"):
        server.create_database(name)


def test_clone_copies_structure_and_rows_independently(
    server: Server, new_name: Callable[[], str]
) -> None:
    template, clone = new_name(), new_name()
    server.create_database(template)
    server.execute(ITEMS, database=template)
    server.execute(ROWS, database=template)

    server.clone_database(clone, template)

    assert _rows(server, SELECT, clone) == [(1, "one"), (2, "two")]
    server.execute("DELETE FROM items WHERE id = 1", database=clone)
    assert _rows(server, SELECT, clone) == [(2, "two")]
    assert _rows(server, SELECT, template) == [(1, "one"), (2, "two")]


def test_clone_of_missing_template_says_to_build_it(
    server: Server, new_name: Callable[[], str]
) -> None:
    missing, clone = new_name(), new_name()
    with pytest.raises(ProvisioningError, match=rf"{missing}.*Build the template"):
        server.clone_database(clone, missing)
    assert not server.database_exists(clone)


def test_drop_missing_is_quiet_unless_asked(server: Server) -> None:
    name = unique_name()
    server.drop_database(name)
    with pytest.raises(ProvisioningError, match=rf"{name}.*missing_ok=True"):
        server.drop_database(name, missing_ok=False)


@pytest.mark.parametrize(
    "bad", ["app", "postgres", "mysql", "Sqlsandbox_x", "sqlsandbox_A", "sqlsandbox_x;drop"]
)
def test_names_without_our_prefix_are_refused(server: Server, bad: str) -> None:
    with pytest.raises(ProvisioningError, match="only touches databases it named itself"):
        server.create_database(bad)
    with pytest.raises(ProvisioningError, match="only touches databases it named itself"):
        server.drop_database(bad)
    with pytest.raises(ProvisioningError, match="only touches databases it named itself"):
        server.clone_database(unique_name(), bad)
    with pytest.raises(ProvisioningError, match="only touches databases it named itself"):
        server.terminate_connections(bad)


def test_a_user_database_survives(server: Server, tmp_path: Path) -> None:
    """A database sqlsandbox did not name is neither listed nor dropped."""
    if server.backend == "sqlite":
        user_db = "app"
        (tmp_path / "sqlite").mkdir(exist_ok=True)
        (tmp_path / "sqlite" / "app.sqlite3").write_bytes(b"")
    else:
        user_db = "postgres" if server.backend == "postgresql" else "mysql"
    assert server.database_exists(user_db)
    with pytest.raises(ProvisioningError, match=f"Refusing to create or drop database '{user_db}'"):
        server.drop_database(user_db)
    assert server.database_exists(user_db)
    assert user_db not in server.list_databases()


def test_list_only_returns_the_prefix(server: Server, new_name: Callable[[], str]) -> None:
    first, second = new_name(), new_name()
    for name in (first, second):
        server.create_database(name)
    assert server.list_databases(prefix=first) == [first]
    assert {first, second} <= set(server.list_databases())
    assert all(name.startswith("sqlsandbox_") for name in server.list_databases())


def test_database_url_reaches_the_database(server: Server, new_name: Callable[[], str]) -> None:
    name = new_name()
    server.create_database(name)
    url = server.database_url(name)
    if server.backend == "sqlite":
        assert url.render().startswith("sqlite:////")
        assert Path(url.database or "").name == f"{name}.sqlite3"
    else:
        assert url.database == name
    assert server.database_url(name, scheme="x+y").scheme == "x+y"


def test_version_and_limits(server: Server) -> None:
    assert server.version()
    info = server.version_info()  # type: ignore[attr-defined]
    assert all(isinstance(part, int) for part in info) and info[0] >= 3
    assert server.max_connections() >= 10
    in_use = server.connections_in_use()
    if server.backend in SESSIONS:
        assert 1 <= in_use <= server.max_connections()  # our own admin session counts
    else:
        assert in_use == 0


def test_terminate_closes_other_sessions(server: Server, new_name: Callable[[], str]) -> None:
    if server.backend not in SESSIONS:
        pytest.skip(f"{server.backend} has no server sessions to close")
    name = new_name()
    server.create_database(name)
    other = _connect(server, name)
    try:
        assert server.terminate_connections(name) == 1
        with pytest.raises(Exception):  # noqa: B017 - each driver has its own "connection lost"
            _query(other)
    finally:
        _close(other)
    assert server.terminate_connections(name) == 0


def test_drop_succeeds_while_a_session_holds_the_database(
    server: Server, new_name: Callable[[], str]
) -> None:
    if server.backend not in SESSIONS:
        pytest.skip(f"{server.backend} has no server sessions to close")
    name = new_name()
    server.create_database(name)
    server.execute(ITEMS, database=name)
    other = _connect(server, name)
    try:
        _query(other, "SELECT count(*) FROM items", commit=False)  # an open transaction
        server.drop_database(name)
    finally:
        _close(other)
    assert not server.database_exists(name)


def test_close_then_use_again(server: Server) -> None:
    server.list_databases()
    server.close()
    assert isinstance(server.list_databases(), list)


# -- a plain driver connection, as an application would hold one ---------------


def _connect(server: Server, name: str) -> object:
    url = server.database_url(name)
    if server.backend == "postgresql":
        import psycopg

        return psycopg.connect(url.with_scheme("postgresql").render())
    import pymysql

    return pymysql.connect(
        host=url.host,
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        database=name,
    )


def _query(conn: object, sql: str = "SELECT 1", *, commit: bool = True) -> None:
    cursor = conn.cursor()  # type: ignore[attr-defined]
    cursor.execute(sql)
    cursor.fetchall()
    if commit:
        conn.commit()  # type: ignore[attr-defined]


def _close(conn: object) -> None:
    try:
        conn.close()  # type: ignore[attr-defined]
    except Exception:  # already closed by the server
        pass
