"""TestClient, anyio portals and Flask's test client run under the test's owner, unchanged.

No header, no shared mode, no sqlsandbox code in the inner project: the
requests reach the test's transaction (or its own database) by themselves.
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


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(100))
"""

ASGI_APP = """
import os

from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from models import Note

engine = create_async_engine(os.environ["ASYNC_DATABASE_URL"])
Session = async_sessionmaker(engine, expire_on_commit=False)
app = FastAPI()


async def count_notes():
    async with Session() as session:
        return await session.scalar(select(func.count()).select_from(Note))


@app.get("/notes/count")
async def count():
    return {"count": await count_notes()}


@app.post("/notes/{text}")
async def create(text: str):
    async with Session() as session:
        note = Note(text=text)
        session.add(note)
        await session.commit()
        return {"id": note.id}
"""

WSGI_APP = """
import os

from flask import Flask
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from models import Note

engine = create_engine(os.environ["DATABASE_URL"])
app = Flask(__name__)


@app.get("/notes/count")
def count():
    with Session(engine) as session:
        return {"count": session.scalar(select(func.count()).select_from(Note))}


@app.post("/notes/<text>")
def create(text):
    with Session(engine) as session:
        session.add(Note(text=text))
        session.commit()
    return {"ok": True}
"""

CONFIG = """
migrate = "metadata:models:Base.metadata"
url_env = ["DATABASE_URL", "ASYNC_DATABASE_URL"]
engines = ["asgi_app:engine", "wsgi_app:engine"]
"""

CONFTEST = """
import pytest
from fastapi.testclient import TestClient

import asgi_app
import wsgi_app


@pytest.fixture(scope="module")
def module_client():
    with TestClient(asgi_app.app) as c:
        yield c


@pytest.fixture
def flask_client():
    return wsgi_app.app.test_client()
"""

TESTS = """
import anyio.from_thread
import pytest
from fastapi.testclient import TestClient

import asgi_app

both = pytest.mark.parametrize(
    "isolation",
    [
        pytest.param("transaction"),
        pytest.param("database", marks=pytest.mark.sandbox(isolation="database")),
    ],
)


@both
@pytest.mark.parametrize("n", range(2))
def test_module_scoped_test_client(module_client, isolation, n):
    assert module_client.get("/notes/count").json() == {"count": 0}
    assert module_client.post("/notes/hello").status_code == 200
    assert module_client.get("/notes/count").json() == {"count": 1}


@both
def test_test_client_per_request_portal(isolation):
    client = TestClient(asgi_app.app)      # no `with`: a new portal for every request
    assert client.get("/notes/count").json() == {"count": 0}
    client.post("/notes/a")
    client.post("/notes/b")
    assert client.get("/notes/count").json() == {"count": 2}


@both
def test_anyio_blocking_portal(isolation):
    with anyio.from_thread.start_blocking_portal() as portal:
        assert portal.call(asgi_app.count_notes) == 0


@both
@pytest.mark.parametrize("n", range(2))
def test_flask_test_client(flask_client, isolation, n):
    assert flask_client.get("/notes/count").json == {"count": 0}
    assert flask_client.post("/notes/hi").status_code == 200
    assert flask_client.get("/notes/count").json == {"count": 1}
"""


# The app's own settings for inner runs (see server_env in conftest.py).
APP_ENV = {
    "DATABASE_URL": "postgresql+psycopg://app:secret@prod.invalid/app",
    "ASYNC_DATABASE_URL": "postgresql+asyncpg://app:secret@prod.invalid/app",
}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_clients_run_under_the_tests_owner_without_code_changes(
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
        conftest=CONFTEST,
        test_clients=TESTS,
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(["tests      transaction 6, database 6"])
