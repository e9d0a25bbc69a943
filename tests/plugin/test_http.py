"""HTTP requests join the test's owner: in-process clients, live servers, a subprocess.

End to end against a real PostgreSQL: a small project with a FastAPI app (async
engine, asyncpg) and a Flask app (sync engine, psycopg), both building their
engines at import time, run by pytester serially and under ``-n 2``. Every
inner test starts from an empty table and writes one row, so a row leaking
from one test into the next fails the run.
"""

from __future__ import annotations

import pytest

from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject

MODELS = """
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
"""

ASGI_APP = """
import os

from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from models import Item

engine = create_async_engine(os.environ["ASYNC_DATABASE_URL"])
Session = async_sessionmaker(engine, expire_on_commit=False)
app = FastAPI()


@app.post("/items/{name}")
async def add(name: str) -> dict:
    async with Session() as session:
        session.add(Item(name=name))
        await session.commit()
    return {"added": name}


@app.get("/items")
async def count() -> dict:
    async with Session() as session:
        return {"count": await session.scalar(select(func.count()).select_from(Item))}


@app.get("/health")
async def health() -> dict:
    return {"ok": True}
"""

WSGI_APP = """
import os

from flask import Flask, Response
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

from models import Item

engine = create_engine(os.environ["DATABASE_URL"])
Session = sessionmaker(engine)
app = Flask(__name__)


@app.post("/items/<name>")
def add(name):
    with Session() as session:
        session.add(Item(name=name))
        session.commit()
    return {"added": name}


@app.get("/items")
def count():
    with Session() as session:
        return {"count": session.scalar(select(func.count()).select_from(Item))}


@app.get("/stream")
def stream():
    def names():
        # Runs while the server sends the body, after the view returned.
        with Session() as session:
            for name in session.scalars(select(Item.name).order_by(Item.id)):
                yield name + "\\n"
    return Response(names(), mimetype="text/plain")
"""

CONFIG = """
migrate = "metadata:models:Base.metadata"
url_env = ["DATABASE_URL", "ASYNC_DATABASE_URL"]
engines = ["asgi_app:engine", "wsgi_app:engine"]
"""

ASGI_TESTS = """
import re
import sys
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from asgi_app import app
from models import Item
from sqlsandbox.http import HEADER, SandboxMiddleware
from sqlsandbox.runtime import http_ok

wrapped = SandboxMiddleware(app)


def write_and_count(client, name):
    assert client.get("/items").json() == {"count": 0}
    assert client.post(f"/items/{name}").status_code == 200
    return client.get("/items").json()["count"]


async def awrite_and_count(client, name):
    assert (await client.get("/items")).json() == {"count": 0}
    assert (await client.post(f"/items/{name}")).status_code == 200
    return (await client.get("/items")).json()["count"]


@pytest.mark.asyncio
async def test_async_client_inherits_the_owner():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        assert await awrite_and_count(client, "async") == 1


@pytest.mark.asyncio
async def test_async_client_with_the_header(sandbox_headers):
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://app", headers=sandbox_headers
    ) as client:
        assert await awrite_and_count(client, "async-header") == 1


def test_testclient_without_a_header():
    with TestClient(app) as client:
        assert write_and_count(client, "testclient") == 1


def test_testclient_with_the_header(sandbox_headers):
    with TestClient(wrapped, headers=sandbox_headers) as client:
        assert write_and_count(client, "testclient-header") == 1


def test_testclient_in_a_plain_thread_needs_the_header(sandbox_headers):
    # A thread inherits nothing from the test: only the header lets it in.
    seen = {}

    def run():
        with TestClient(wrapped, raise_server_exceptions=False) as client:
            seen["without"] = client.get("/items").status_code
            seen["with"] = write_and_count(TestClient(wrapped, headers=sandbox_headers), "t")

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == {"without": 500, "with": 1}


def test_live_server_in_a_thread_with_the_header(sandbox_app_server, sandbox_headers):
    server = sandbox_app_server(wrapped)
    with httpx.Client(base_url=server.url, headers=sandbox_headers) as client:
        assert write_and_count(client, "live") == 1


def test_live_server_without_the_header_is_refused(sandbox_app_server):
    server = sandbox_app_server(wrapped)
    assert httpx.get(f"{server.url}/items").status_code == 500
    # The app's error reaches the server's log just after the response: wait for it.
    assert server.wait_output(re.compile("OwnershipError: Database access by task"), 10)


@pytest.mark.sandbox(mode="shared")
def test_live_server_in_shared_mode_needs_no_header(sandbox_app_server):
    server = sandbox_app_server(app)
    with httpx.Client(base_url=server.url) as client:
        assert write_and_count(client, "shared") == 1


def test_unknown_token_gets_a_clear_error(sandbox_app_server):
    server = sandbox_app_server(wrapped)
    response = httpx.get(f"{server.url}/items", headers={HEADER: "sqlsandbox-0123456789ab"})
    assert response.status_code == 500
    assert response.headers["x-sqlsandbox-error"] == "owner-not-found"
    assert "'sqlsandbox-0123456789ab' in header 'x-sqlsandbox-owner'" in response.text
    assert "no sandbox of this process has an active owner" in response.text


def test_token_of_an_ended_owner_gets_the_same_error(sandbox, sandbox_app_server):
    tokens = []

    def short_lived_owner():
        owner = sandbox.sandbox.checkout(lazy=True, name="ended")
        tokens.append(owner.token)
        sandbox.sandbox.checkin(owner)

    thread = threading.Thread(target=short_lived_owner)
    thread.start()
    thread.join()
    server = sandbox_app_server(wrapped)
    response = httpx.get(f"{server.url}/items", headers={HEADER: tokens[0]})
    assert response.status_code == 500
    assert "the test that made it has ended" in response.text


@pytest.mark.sandbox(isolation="database")
def test_server_in_a_subprocess_uses_the_tests_database(
    sandbox_process, free_tcp_port, db_url, db_session, sandbox_headers
):
    assert sandbox_headers == {}  # no owner to join: the test has a database of its own
    url = f"http://127.0.0.1:{free_tcp_port}"
    sandbox_process(
        [sys.executable, "-m", "uvicorn", "asgi_app:app", "--port", str(free_tcp_port)],
        env={"ASYNC_DATABASE_URL": db_url.replace("postgresql://", "postgresql+asyncpg://", 1)},
        ready=http_ok(f"{url}/health"),
    )
    assert httpx.post(f"{url}/items/subprocess").status_code == 200
    # The server committed into the test's own clone, which the test sees.
    assert db_session.scalar(select(func.count()).select_from(Item)) == 1
"""

WSGI_TESTS = """
import threading

import httpx
from werkzeug.serving import make_server

from sqlsandbox.http import HEADER, SandboxWSGIMiddleware
from wsgi_app import app

app.wsgi_app = SandboxWSGIMiddleware(app.wsgi_app)


def write_and_count(client, name, **kwargs):
    assert client.get("/items", **kwargs).json == {"count": 0}
    assert client.post(f"/items/{name}", **kwargs).status_code == 200
    return client.get("/items", **kwargs).json["count"]


def test_test_client_inherits_the_owner():
    assert write_and_count(app.test_client(), "flask") == 1


def test_test_client_with_the_header(sandbox_headers):
    assert write_and_count(app.test_client(), "flask-header", headers=sandbox_headers) == 1


def test_test_client_in_a_plain_thread_needs_the_header(sandbox_headers):
    seen = {}

    def run():
        client = app.test_client()
        seen["without"] = client.get("/items").status_code
        seen["with"] = write_and_count(client, "thread", headers=sandbox_headers)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == {"without": 500, "with": 1}


class LiveServer:
    def __enter__(self):
        self.server = make_server("127.0.0.1", 0, app)
        self.thread = threading.Thread(target=self.server.serve_forever)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_port}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()


def test_live_wsgi_server_with_the_header(sandbox_headers):
    with LiveServer() as url, httpx.Client(base_url=url, headers=sandbox_headers) as client:
        assert client.post("/items/first").status_code == 200
        assert client.post("/items/second").status_code == 200
        # The body is produced after the view returned: it runs as the owner too.
        assert client.get("/stream").text == "first\\nsecond\\n"


def test_live_wsgi_server_refuses_an_unknown_token():
    with LiveServer() as url:
        response = httpx.get(f"{url}/items", headers={HEADER: "sqlsandbox-feedfacecafe"})
    assert response.status_code == 500
    assert response.headers["x-sqlsandbox-error"] == "owner-not-found"
    assert "no sandbox of this process has an active owner" in response.text
"""


@pytest.fixture
def server_env(monkeypatch: pytest.MonkeyPatch, postgres_admin_url: DatabaseURL) -> DatabaseURL:
    """Point inner runs at the test PostgreSQL; give the app env vars a form to keep."""
    monkeypatch.setenv("SQLSANDBOX_URL", postgres_admin_url.render())
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://app:secret@prod.invalid/app")
    monkeypatch.setenv("ASYNC_DATABASE_URL", "postgresql+asyncpg://app:secret@prod.invalid/app")
    return postgres_admin_url


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_requests_join_the_tests_owner(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    workers: list[str],
) -> None:
    make_project(
        CONFIG,
        models=MODELS,
        asgi_app=ASGI_APP,
        wsgi_app=WSGI_APP,
        test_asgi=ASGI_TESTS,
        test_wsgi=WSGI_TESTS,
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    result.assert_outcomes(passed=16)
    assert "secret" not in result.stdout.str() + result.stderr.str()
