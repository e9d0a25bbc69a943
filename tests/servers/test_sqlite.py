"""SQLite backend: a directory of files; URL forms, copies that see the WAL, clean drops."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from sqlsandbox import ConfigError, ProvisioningError
from sqlsandbox.servers import SQLiteServer, connect_server

from .conftest import unique_name


@pytest.fixture
def server(tmp_path: Path) -> SQLiteServer:
    return SQLiteServer(f"sqlite:///{tmp_path}/dbs")


def test_bare_sqlite_uses_a_directory_under_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    server = connect_server("sqlite")
    assert isinstance(server, SQLiteServer)
    assert server.directory == tmp_path / ".sqlsandbox" / "sqlite"
    name = unique_name()
    server.create_database(name)
    assert (tmp_path / ".sqlsandbox" / "sqlite" / f"{name}.sqlite3").is_file()


def test_relative_and_absolute_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = SQLiteServer("sqlite:///rel/dir")
    absolute = SQLiteServer(f"sqlite:///{tmp_path}/abs")
    assert relative.directory == tmp_path / "rel" / "dir"
    assert absolute.directory == tmp_path / "abs"
    monkeypatch.chdir("/")  # a later chdir does not move the databases
    assert relative.path("sqlsandbox_x") == tmp_path / "rel" / "dir" / "sqlsandbox_x.sqlite3"


def test_database_url_is_the_absolute_file_and_keeps_the_driver(tmp_path: Path) -> None:
    server = SQLiteServer(f"sqlite+aiosqlite:///{tmp_path}")
    url = server.database_url("sqlsandbox_x")
    assert url.render() == f"sqlite+aiosqlite:///{tmp_path}/sqlsandbox_x.sqlite3"
    assert server.database_url("sqlsandbox_x", scheme="sqlite").render().startswith("sqlite:////")


def test_clone_is_usable_through_its_url(server: SQLiteServer) -> None:
    template, clone = unique_name(), unique_name()
    server.create_database(template)
    server.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", database=template)
    server.execute("INSERT INTO t (v) VALUES (?)", ("hello",), database=template)
    server.clone_database(clone, template)
    with closing(sqlite3.connect(server.database_url(clone).database or "")) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("hello",)]


def test_clone_sees_rows_still_in_the_write_ahead_log(server: SQLiteServer) -> None:
    template, clone = unique_name(), unique_name()
    server.create_database(template)
    with closing(sqlite3.connect(server.path(template), isolation_level=None)) as writer:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("CREATE TABLE t (v TEXT)")
        writer.execute("INSERT INTO t VALUES ('in the wal')")
        assert server.path(template).with_name(f"{template}.sqlite3-wal").stat().st_size > 0
        server.clone_database(clone, template)
    assert server.execute("SELECT v FROM t", database=clone) == [("in the wal",)]


def test_drop_removes_the_companion_files(server: SQLiteServer) -> None:
    name = unique_name()
    server.create_database(name)
    path = server.path(name)
    companions = [path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal")]
    for file in companions:
        file.write_bytes(b"")
    server.drop_database(name)
    assert not path.exists() and not any(file.exists() for file in companions)


def test_list_ignores_other_files(server: SQLiteServer) -> None:
    assert server.list_databases() == []  # the directory does not exist yet
    name = unique_name()
    server.create_database(name)
    (server.directory / f"{name}.sqlite3-wal").write_bytes(b"")
    (server.directory / "sqlsandbox_notes.txt").write_text("x")
    assert server.list_databases() == [name]


def test_sessions_and_limits(server: SQLiteServer) -> None:
    assert server.connections_in_use() == 0
    assert server.terminate_connections("sqlsandbox_x") == 0
    assert server.max_connections() >= 1000
    assert server.version() == sqlite3.sqlite_version


def test_url_with_a_host_is_refused() -> None:
    with pytest.raises(ConfigError, match="names a host; SQLite uses a directory"):
        SQLiteServer("sqlite://somehost/dir")


def test_directory_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    server = SQLiteServer(f"sqlite:///{blocker}/sub")
    with pytest.raises(ProvisioningError, match=r"Cannot create the SQLite directory.*writable"):
        server.create_database(unique_name())


def test_bad_sql_is_a_provisioning_error(server: SQLiteServer) -> None:
    name = unique_name()
    server.create_database(name)
    with pytest.raises(
        ProvisioningError,
        match=rf"Could not run SQL in SQLite database .*{name}\.sqlite3: no such table: nowhere\. "
        r"SQLite rejected the statement: fix the SQL",
    ):
        server.execute("SELECT * FROM nowhere", database=name)
    missing = unique_name()
    with pytest.raises(
        ProvisioningError,
        match=rf"Cannot run SQL in SQLite database '{missing}': .* does not exist\. Create it "
        r"first \(server\.create_database\(name\)\), or check the name",
    ):
        server.execute("SELECT 1", database=missing)


def test_a_damaged_template_says_which_file_to_delete(server: SQLiteServer) -> None:
    template, clone = unique_name(), unique_name()
    server.create_database(template)
    path = server.path(template)
    # A file that is no database, with WAL content: the clone goes through SQLite.
    path.write_bytes(b"not a database at all " * 100)
    path.with_name(path.name + "-wal").write_bytes(b"junk" * 100)
    with pytest.raises(
        ProvisioningError,
        match=rf"Cannot clone SQLite database '{template}' into '{clone}' in .*: file is not a "
        rf"database\. .*{template}\.sqlite3 is damaged: delete it with its -wal and -shm files",
    ):
        server.clone_database(clone, template)
    assert server.list_databases() == [template]  # the half-made clone is gone
