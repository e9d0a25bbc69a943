"""A lock wait timeout on a MariaDB server with ``innodb_rollback_on_timeout`` on.

Then error 1205 rolls back the whole transaction, like a deadlock (1213): for
a sandboxed test that is the test's transaction, and the app's next
statements would commit for real. Every MariaDB route (PyMySQL and aiomysql
used directly, SQLAlchemy engines on either) must lose the connection with
the deadlock's clear error. The setting is read-only at run time, so these
tests start a private MariaDB server of their own with it on (and a lock
wait timeout of one second).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomysql
import pymysql
import pytest
import pytest_asyncio
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

import sqlsandbox.mysql
from sqlsandbox import OwnershipError, Sandbox
from sqlsandbox._urls import DatabaseURL
from sqlsandbox.sqlalchemy import install

LOCK = "SELECT id FROM items WHERE id = %s FOR UPDATE"
INSERT = "INSERT INTO items (name) VALUES (%s)"
SELECT = "SELECT name FROM items WHERE name LIKE %s ORDER BY name"
LOST = r"rolled back the whole transaction of owner .* because of a lock wait timeout"
DATABASE = "lockwait"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseURL]:
    """A private MariaDB server with innodb_rollback_on_timeout on; its URL."""
    mariadbd = shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin:/usr/bin")
    install_db = shutil.which("mariadb-install-db")
    if mariadbd is None or install_db is None:
        pytest.skip("needs the MariaDB server binaries (apt-get install mariadb-server)")
    base: Path = tmp_path_factory.mktemp("mariadb-rollback-on-timeout")
    data = base / "data"
    subprocess.run(
        [
            install_db,
            "--no-defaults",
            f"--datadir={data}",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            mariadbd,
            "--no-defaults",
            f"--datadir={data}",
            f"--socket={base / 'sock'}",
            f"--pid-file={base / 'pid'}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--user=root",
            "--skip-log-bin",
            "--log-warnings=0",
            "--innodb-buffer-pool-size=16M",
            "--innodb-rollback-on-timeout=1",
            "--innodb-lock-wait-timeout=1",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        log = []
        for line in proc.stderr:  # EOF when it exits: then the log says why
            log.append(line)
            if "ready for connections" in line:
                break
        else:
            pytest.fail("the private MariaDB server did not start:\n" + "".join(log))
        conn = pymysql.connect(host="127.0.0.1", port=port, user="root")
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DATABASE}")
            cur.execute(
                f"CREATE TABLE {DATABASE}.items (id INTEGER AUTO_INCREMENT PRIMARY KEY, "
                "name VARCHAR(200) NOT NULL UNIQUE)"
            )
            cur.execute(f"INSERT INTO {DATABASE}.items (name) VALUES ('locked')")
        conn.commit()
        conn.close()
        yield DatabaseURL.parse(f"mysql://root@127.0.0.1:{port}/{DATABASE}")
    finally:
        proc.terminate()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
def kw(server: DatabaseURL) -> dict[str, Any]:
    return {"host": server.host, "port": server.port, "user": "root", "database": DATABASE}


@pytest.fixture
def locked(kw: dict[str, Any]) -> Iterator[int]:
    """Lock the row 'locked' from a connection outside the sandbox; its id."""
    other = pymysql.connect(**kw)
    with other.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT id FROM items WHERE name = 'locked' FOR UPDATE")
        row_id = int(cur.fetchone()[0])
    yield row_id
    other.rollback()
    other.close()


def committed(kw: dict[str, Any], tag: str) -> list[str]:
    conn = pymysql.connect(**kw)
    try:
        with conn.cursor() as cur:
            cur.execute(SELECT, (tag + "%",))
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def test_pymysql(server: DatabaseURL, kw: dict[str, Any], locked: int, tag: str) -> None:
    box = Sandbox(server, name="pymysql-lock-wait")
    sqlsandbox.mysql.install(box)
    try:
        with box.checkout():
            conn = pymysql.connect(**kw)
            cur = conn.cursor()
            cur.execute(INSERT, (tag + "before",))
            with pytest.raises(OwnershipError, match=LOST) as info:
                cur.execute(LOCK, (locked,))
            assert isinstance(info.value.__cause__, pymysql.err.OperationalError)
            assert info.value.__cause__.args[0] == 1205
            with pytest.raises(OwnershipError, match=LOST):
                cur.execute(INSERT, (tag + "after",))
    finally:
        sqlsandbox.mysql.uninstall(box)
        box.close()
    assert committed(kw, tag) == []


def test_sqlalchemy_pymysql(server: DatabaseURL, kw: dict[str, Any], locked: int, tag: str) -> None:
    engine = create_engine(server.with_scheme("mysql+pymysql").render())
    box = Sandbox(server, name="sqlalchemy-lock-wait")
    install(engine, box)
    try:
        with box.checkout(), engine.connect() as conn:
            conn.execute(text("INSERT INTO items (name) VALUES (:n)"), {"n": tag + "before"})
            with pytest.raises(OwnershipError, match=LOST):
                conn.execute(text("SELECT id FROM items WHERE id = :i FOR UPDATE"), {"i": locked})
            with pytest.raises(OwnershipError, match=LOST):
                conn.execute(text("INSERT INTO items (name) VALUES (:n)"), {"n": tag + "after"})
        assert committed(kw, tag) == []
    finally:
        box.close()
        engine.dispose()


@pytest_asyncio.fixture
async def asandbox(server: DatabaseURL) -> AsyncIterator[Sandbox]:
    box = Sandbox(server, name="async-lock-wait")
    yield box
    await box.aclose()


@pytest.mark.asyncio
async def test_aiomysql(asandbox: Sandbox, kw: dict[str, Any], locked: int, tag: str) -> None:
    sqlsandbox.mysql.install(asandbox)
    try:
        async with await asandbox.acheckout():
            akw = {**{k: v for k, v in kw.items() if k != "database"}, "db": DATABASE}
            conn = await aiomysql.connect(**akw)
            cur = await conn.cursor()
            await cur.execute(INSERT, (tag + "before",))
            with pytest.raises(OwnershipError, match=LOST):
                await cur.execute(LOCK, (locked,))
            with pytest.raises(OwnershipError, match=LOST):
                await cur.execute(INSERT, (tag + "after",))
    finally:
        sqlsandbox.mysql.uninstall(asandbox)
    assert committed(kw, tag) == []


@pytest.mark.asyncio
async def test_sqlalchemy_aiomysql(
    server: DatabaseURL, asandbox: Sandbox, kw: dict[str, Any], locked: int, tag: str
) -> None:
    engine = create_async_engine(server.with_scheme("mysql+aiomysql").render())
    install(engine, asandbox)
    try:
        async with await asandbox.acheckout(), engine.connect() as conn:
            await conn.execute(text("INSERT INTO items (name) VALUES (:n)"), {"n": tag + "before"})
            with pytest.raises(OwnershipError, match=LOST):
                await conn.execute(
                    text("SELECT id FROM items WHERE id = :i FOR UPDATE"), {"i": locked}
                )
            with pytest.raises(OwnershipError, match=LOST):
                await conn.execute(
                    text("INSERT INTO items (name) VALUES (:n)"), {"n": tag + "after"}
                )
    finally:
        await engine.dispose()
    assert committed(kw, tag) == []
