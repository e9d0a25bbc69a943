"""The recipes of docs/recipes/asyncpg.md and docs/recipes/flask.md, run as written.

One pytester project holds both apps (each test uses one of them), against a
real PostgreSQL, under ``-n 2``: a FastAPI app on a plain asyncpg pool made in its lifespan,
routed by ``sqlsandbox.asyncpg``; and a Flask app factory whose engine is
routed from a fixture. Every test starts from an empty table.
"""

from __future__ import annotations

import pytest

from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject

CONFIG = """
migrate = "sql:migrations/"
url_env = ["DATABASE_URL"]
"""

SCHEMA = "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);\n"

ASYNCPG_APP = """
import os
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request


@asynccontextmanager
async def lifespan(app):
    app.state.pool = await asyncpg.create_pool(os.environ["DATABASE_URL"])
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/notes")
async def add(body: str, request: Request) -> dict:
    async with request.app.state.pool.acquire() as conn:
        async with conn.transaction():
            note_id = await conn.fetchval(
                "INSERT INTO notes (body) VALUES ($1) RETURNING id", body
            )
    return {"id": note_id}


@app.get("/notes")
async def notes(request: Request) -> list:
    rows = await request.app.state.pool.fetch("SELECT body FROM notes ORDER BY id")
    return [row["body"] for row in rows]
"""

FLASK_APP = """
import os

from flask import Flask
from sqlalchemy import create_engine, text


def create_app(database_url=None):
    app = Flask(__name__)
    app.config["ENGINE"] = engine = create_engine(database_url or os.environ["DATABASE_URL"])

    @app.post("/notes/<body>")
    def add(body):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": body})
        return {"added": body}

    @app.get("/notes")
    def notes():
        with engine.connect() as conn:
            return [r.body for r in conn.execute(text("SELECT body FROM notes ORDER BY id"))]

    return app
"""

CONFTEST = """
import pytest
import pytest_asyncio
from httpx import ASGITransport, AsyncClient

import sqlsandbox.asyncpg
from asyncpg_app import app as asyncpg_app
from flask_factory import create_app
from sqlsandbox.http import SandboxWSGIMiddleware


@pytest.fixture(scope="session", autouse=True)
def _route_asyncpg(sqlsandbox_database):
    # asyncpg.connect()/create_pool() for the worker's database give the test's connection.
    sqlsandbox.asyncpg.install(sqlsandbox_database.sandbox)
    yield
    sqlsandbox.asyncpg.uninstall(sqlsandbox_database.sandbox)


@pytest_asyncio.fixture
async def client():
    async with asyncpg_app.router.lifespan_context(asyncpg_app):
        transport = ASGITransport(app=asyncpg_app)
        async with AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


@pytest.fixture(scope="session")
def flask_app(sqlsandbox_database):
    app = create_app()
    sqlsandbox_database.route(app.config["ENGINE"])   # the factory's engine, made after startup
    app.wsgi_app = SandboxWSGIMiddleware(app.wsgi_app)
    return app


@pytest.fixture
def flask_client(flask_app):
    return flask_app.test_client()
"""

TESTS = """
import httpx
import pytest
from fastapi.testclient import TestClient

from asyncpg_app import app as asyncpg_app
from sqlsandbox.http import SandboxMiddleware


@pytest.mark.asyncio
async def test_asyncpg_app_with_async_client(client):
    assert (await client.get("/notes")).json() == []
    assert (await client.post("/notes", params={"body": "first"})).status_code == 200
    assert (await client.get("/notes")).json() == ["first"]


def test_asyncpg_app_with_testclient():
    with TestClient(asyncpg_app) as client:
        assert client.get("/notes").json() == []
        assert client.post("/notes", params={"body": "sync"}).status_code == 200
        assert client.get("/notes").json() == ["sync"]


def test_asyncpg_app_served_by_uvicorn(sandbox_app_server, sandbox_headers):
    server = sandbox_app_server(SandboxMiddleware(asyncpg_app))
    with httpx.Client(base_url=server.url, headers=sandbox_headers) as client:
        assert client.get("/notes").json() == []
        assert client.post("/notes", params={"body": "live"}).status_code == 200
        assert client.get("/notes").json() == ["live"]


def test_flask_factory_app(flask_client):
    assert flask_client.get("/notes").json == []
    flask_client.post("/notes/flask")
    assert flask_client.get("/notes").json == ["flask"]


def test_flask_factory_app_again(flask_client, sandbox_headers):
    assert flask_client.get("/notes", headers=sandbox_headers).json == []
    flask_client.post("/notes/again", headers=sandbox_headers)
    assert flask_client.get("/notes", headers=sandbox_headers).json == ["again"]
"""


def test_asyncpg_and_flask_recipes(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    monkeypatch: pytest.MonkeyPatch,
    postgres_admin_url: DatabaseURL,
) -> None:
    # Under -n 2 only: the serial case of the same mechanisms is in test_http.py.
    monkeypatch.setenv("SQLSANDBOX_URL", postgres_admin_url.render())
    # asyncpg takes plain postgresql:// URLs: the form url_env keeps.
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:secret@prod.invalid/app")
    make_project(
        CONFIG,
        asyncpg_app=ASYNCPG_APP,
        flask_factory=FLASK_APP,
        conftest=CONFTEST,
        test_recipes=TESTS,
    )
    pytester.mkdir("migrations").joinpath("001_notes.sql").write_text(SCHEMA)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "2")
    result.assert_outcomes(passed=5)
