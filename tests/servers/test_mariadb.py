"""MariaDB backend: a clone is a faithful copy; sessions, limits and bad input."""

from __future__ import annotations

import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from sqlsandbox import ConfigError, ProvisioningError
from sqlsandbox._urls import DatabaseURL
from sqlsandbox.servers import MariaDBServer, connect_server

from .conftest import PASSWORD, unique_name

SCHEMA = """
CREATE TABLE authors (
    id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(40) NOT NULL,
    initials VARCHAR(2) AS (LEFT(name, 2)) VIRTUAL
);
CREATE TABLE books (
    id INT AUTO_INCREMENT PRIMARY KEY,
    author_id INT NOT NULL,
    title VARCHAR(80) NOT NULL,
    CONSTRAINT books_author FOREIGN KEY (author_id) REFERENCES authors (id)
);
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(80) NOT NULL);
CREATE SEQUENCE tickets START WITH 500;
CREATE FUNCTION shout(s VARCHAR(80)) RETURNS VARCHAR(80) DETERMINISTIC RETURN UPPER(s);
CREATE PROCEDURE count_books(OUT n INT) SELECT COUNT(*) INTO n FROM books;
CREATE VIEW titles AS SELECT b.id, shout(b.title) AS title, a.name
    FROM books b JOIN authors a ON a.id = b.author_id;
CREATE VIEW first_title AS SELECT title FROM titles ORDER BY id LIMIT 1;
CREATE TRIGGER books_audit AFTER INSERT ON books
    FOR EACH ROW INSERT INTO audit (what) VALUES (NEW.title);
INSERT INTO authors (name) VALUES ('Ada'), ('Grace'), ('Linus');
DELETE FROM authors WHERE name = 'Linus';
INSERT INTO books (author_id, title) VALUES (1, 'notes'), (2, 'cobol');
"""


@pytest.fixture
def server(mariadb_admin_url: DatabaseURL) -> Iterator[MariaDBServer]:
    handle = MariaDBServer(mariadb_admin_url)
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture
def template(server: MariaDBServer, new_name: Callable[[], str]) -> str:
    name = new_name()
    server.create_database(name)
    _script(server, name, SCHEMA)
    return name


def _script(server: MariaDBServer, database: str, sql: str) -> None:
    url = server.url
    conn = pymysql.connect(
        host=url.host,
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        database=database,
        autocommit=True,
        client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            while cursor.nextset():
                pass
    finally:
        conn.close()


def _q(server: MariaDBServer, sql: str, database: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in server.execute(sql, database=database)]


def _shown(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


def test_clone_copies_tables_rows_views_routines_and_sequences(
    server: MariaDBServer, template: str, new_name: Callable[[], str]
) -> None:
    clone = new_name()
    server.clone_database(clone, template)

    assert _q(server, "SELECT id, name, initials FROM authors ORDER BY id", clone) == [
        (1, "Ada", "Ad"),
        (2, "Grace", "Gr"),
    ]
    assert _q(server, "SELECT title, name FROM titles ORDER BY id", clone) == [
        ("NOTES", "Ada"),
        ("COBOL", "Grace"),
    ]
    assert _q(server, "SELECT title FROM first_title", clone) == [("NOTES",)]
    assert _q(server, "SELECT shout('x')", clone) == [("X",)]
    assert _q(server, "CALL count_books(@n)", clone) == []
    assert _q(server, "SELECT NEXTVAL(tickets) >= 500", clone) == [(1,)]


def test_clone_views_read_the_clone_not_the_template(
    server: MariaDBServer, template: str, new_name: Callable[[], str]
) -> None:
    clone = new_name()
    server.clone_database(clone, template)
    server.execute(f"UPDATE `{clone}`.books SET title = 'changed' WHERE id = 1")
    assert _q(server, "SELECT title FROM first_title", clone) == [("CHANGED",)]
    assert _q(server, "SELECT title FROM first_title", template) == [("NOTES",)]
    definition = _q(server, "SHOW CREATE VIEW titles", clone)[0][1]
    assert template not in definition


def test_clone_keeps_foreign_keys_and_auto_increment(
    server: MariaDBServer, template: str, new_name: Callable[[], str]
) -> None:
    clone = new_name()
    server.clone_database(clone, template)
    with pytest.raises(ProvisioningError, match="foreign key constraint fails"):
        server.execute(f"INSERT INTO `{clone}`.books (author_id, title) VALUES (99, 'x')")
    # Linus (id 3) was deleted in the template: the counter still says 4.
    server.execute(f"INSERT INTO `{clone}`.authors (name) VALUES ('Barbara')")
    assert _q(server, "SELECT MAX(id) FROM authors", clone) == [(4,)]


def test_triggers_are_copied_but_not_fired_by_the_copy(
    server: MariaDBServer, template: str, new_name: Callable[[], str]
) -> None:
    clone = new_name()
    server.clone_database(clone, template)
    assert _q(server, "SELECT what FROM audit ORDER BY id", clone) == [("notes",), ("cobol",)]
    server.execute(f"INSERT INTO `{clone}`.books (author_id, title) VALUES (1, 'more')")
    assert _q(server, "SELECT what FROM audit ORDER BY id", clone)[-1] == ("more",)


def test_clone_leaves_the_admin_session_as_it_was(
    server: MariaDBServer, template: str, new_name: Callable[[], str]
) -> None:
    before = server.execute("SELECT DATABASE(), @@FOREIGN_KEY_CHECKS, @@SESSION.sql_mode")
    server.clone_database(new_name(), template)
    after = server.execute("SELECT DATABASE(), @@FOREIGN_KEY_CHECKS, @@SESSION.sql_mode")
    assert after == before
    assert after[0][1] == 1


def test_failed_clone_leaves_no_half_copy(
    server: MariaDBServer, template: str, new_name: Callable[[], str]
) -> None:
    clone = new_name()
    # A view over a table that no longer exists cannot be recreated.
    _script(
        server,
        template,
        "CREATE TABLE doomed (id INT); CREATE VIEW broken AS SELECT id FROM doomed;"
        "DROP TABLE doomed;",
    )
    with pytest.raises(
        ProvisioningError, match=rf"Could not clone database '{template}' into '{clone}'"
    ):
        server.clone_database(clone, template)
    assert not server.database_exists(clone)
    assert server.execute("SELECT DATABASE(), @@FOREIGN_KEY_CHECKS") == [("mysql", 1)]


def test_create_uses_utf8mb4(server: MariaDBServer, new_name: Callable[[], str]) -> None:
    name = new_name()
    server.create_database(name)
    rows = server.execute(
        "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
        (name,),
    )
    assert rows[0][0] == "utf8mb4"


def test_list_escapes_like_wildcards(server: MariaDBServer) -> None:
    base = unique_name()
    underscore, letter = f"{base}_a", f"{base}xa"
    for name in (underscore, letter):
        server.create_database(name)
    try:
        assert server.list_databases(prefix=f"{base}_") == [underscore]
    finally:
        for name in (underscore, letter):
            server.drop_database(name)


def test_admin_connection_comes_back_after_being_killed(
    server: MariaDBServer, mariadb_admin_url: DatabaseURL
) -> None:
    own_id = server.execute("SELECT CONNECTION_ID()")[0][0]
    killer = MariaDBServer(mariadb_admin_url)
    try:
        killer.execute(f"KILL CONNECTION {int(own_id)}")
    finally:
        killer.close()
    assert server.execute("SELECT CONNECTION_ID()")[0][0] != own_id


def test_version(server: MariaDBServer) -> None:
    assert server.version_info() >= (10,)
    assert server.version().startswith(".".join(map(str, server.version_info())))
    assert server.is_mariadb


def test_driver_in_scheme_and_unix_socket(server: MariaDBServer) -> None:
    socket = server.execute("SELECT @@socket")[0][0]
    if not socket or not Path(socket).exists():
        pytest.skip("the MariaDB server has no unix socket on this machine")
    url = server.url.replace(scheme="mariadb+asyncmy", host="localhost", port=None)
    via_socket = connect_server(url.replace(query=(("unix_socket", socket),)))
    try:
        assert via_socket.version() == server.version()
        assert via_socket.database_url("sqlsandbox_x").scheme == "mariadb+asyncmy"
    finally:
        via_socket.close()


# -- bad input -------------------------------------------------------------------


def test_unreachable_server() -> None:
    server = MariaDBServer(f"mysql://root:{PASSWORD}@127.0.0.1:1/mysql")
    with pytest.raises(
        ProvisioningError,
        match=r"Cannot connect to MariaDB at mysql://root:\*\*\*@127\.0\.0\.1:1/mysql: "
        r".*Is the server running\? .*SQLSANDBOX_URL",
    ) as caught:
        server.list_databases()
    assert caught.value.__cause__ is None
    assert PASSWORD not in _shown(caught.value)


def test_wrong_password_and_missing_privileges(
    server: MariaDBServer, mariadb_admin_url: DatabaseURL
) -> None:
    user = f"sqlsandbox_u_{uuid.uuid4().hex[:8]}"
    server.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-{PASSWORD}'")
    server.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY 'right-{PASSWORD}'")
    try:
        wrong = MariaDBServer(mariadb_admin_url.replace(username=user, password=PASSWORD))
        with pytest.raises(
            ProvisioningError,
            match=rf"Access denied for user '{user}'.*Check the user name and password in "
            r"--sqlsandbox-url / SQLSANDBOX_URL",
        ) as caught:
            wrong.version()
        assert PASSWORD not in _shown(caught.value)

        weak = MariaDBServer(
            mariadb_admin_url.replace(username=user, password=f"right-{PASSWORD}", database=None)
        )
        try:
            with pytest.raises(
                ProvisioningError,
                match=rf"Access denied for user '{user}'.*User '{user}' lacks a privilege this "
                r"needs: all privileges on the databases sqlsandbox names \(GRANT ALL ON "
                r"`sqlsandbox\\_%`\.\* TO \.\.\.\)",
            ):
                weak.create_database(unique_name())
        finally:
            weak.close()
    finally:
        server.execute(f"DROP USER IF EXISTS '{user}'@'%', '{user}'@'localhost'")


def test_a_killed_session_asks_whether_the_server_runs(
    server: MariaDBServer, new_name: Callable[[], str]
) -> None:
    name = new_name()
    server.create_database(name)
    with pytest.raises(
        ProvisioningError,
        match=rf"Could not run SQL in database '{name}' on .*: Connection was killed\. The "
        r"server closed the connection: is it still running",
    ):
        server.execute("KILL CONNECTION_ID()", database=name)
    assert server.database_exists(name)


def test_missing_database(mariadb_admin_url: DatabaseURL) -> None:
    server = MariaDBServer(mariadb_admin_url.replace(database="no_such_db_here"))
    with pytest.raises(
        ProvisioningError,
        match=r"Unknown database 'no_such_db_here'\. Create that database or name an existing "
        r"one in the URL path \(for example /mysql\)",
    ):
        server.version()


def test_missing_driver(monkeypatch: pytest.MonkeyPatch, mariadb_admin_url: DatabaseURL) -> None:
    monkeypatch.setitem(sys.modules, "pymysql", None)
    with pytest.raises(ConfigError, match=r"pip install 'sqlsandbox\[mysql\]'"):
        connect_server(mariadb_admin_url)
