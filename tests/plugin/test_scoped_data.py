"""Data from session-, package-, module- and class-scoped fixtures, end to end.

The inner project is written the way FastAPI projects write their conftest
(a session-scoped autouse fixture that commits a superuser and yields its
Session, a module-scoped TestClient), with no sqlsandbox code at all.
"""

from __future__ import annotations

import pytest

from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject

APP = """
import os

from fastapi import FastAPI, HTTPException
from sqlalchemy import String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

engine = create_engine(os.environ["DATABASE_URL"])


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100), unique=True)
    is_superuser: Mapped[bool] = mapped_column(default=False)


app = FastAPI()


@app.get("/users/count")
def count_users():
    with Session(engine) as session:
        return {"count": session.scalar(select(func.count()).select_from(User))}


@app.get("/users/{email}")
def read_user(email: str):
    with Session(engine) as session:
        user = session.scalars(select(User).where(User.email == email)).first()
        if user is None:
            raise HTTPException(404)
        return {"id": user.id, "is_superuser": user.is_superuser}


@app.post("/users/{email}")
def create_user(email: str):
    with Session(engine) as session:
        user = User(email=email)
        session.add(user)
        session.commit()
        return {"id": user.id}
"""

CONFIG = """
migrate = "metadata:app:Base.metadata"
url_env = ["DATABASE_URL"]
engines = ["app:engine"]
"""

CONFTEST = """
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app import User, app, engine

SUPERUSER = "admin@example.com"


def init_db(session):
    user = session.scalars(select(User).where(User.email == SUPERUSER)).first()
    if not user:
        user = User(email=SUPERUSER, is_superuser=True)
        session.add(user)
        session.commit()
        session.refresh(user)     # leaves the session in a transaction
    return user


@pytest.fixture(scope="session", autouse=True)
def db():
    with Session(engine) as session:
        init_db(session)
        yield session
        session.execute(delete(User))
        session.commit()


@pytest.fixture(scope="module")
def client():
    with TestClient(app) as c:
        yield c
"""

TEST_SHARED_SESSION = """
import pytest
from sqlalchemy import func, select

from app import User


def test_superuser_is_there(client):
    assert client.get("/users/admin@example.com").json()["is_superuser"] is True


@pytest.mark.parametrize("n", range(4))
def test_shared_session_writes_are_undone(db, client, n):
    assert client.get("/users/count").json() == {"count": 1}
    user = User(email=f"user{n}@example.com")
    db.add(user)
    db.commit()
    db.refresh(user)                      # the test ends with the session in a transaction
    assert client.get(f"/users/user{n}@example.com").status_code == 200
    assert db.scalar(select(func.count()).select_from(User)) == 2


@pytest.mark.parametrize("n", range(4))
def test_api_writes_are_undone(db, client, n):
    assert client.post(f"/users/api{n}@example.com").status_code == 200
    assert db.scalar(select(func.count()).select_from(User)) == 2
    assert client.get("/users/count").json() == {"count": 2}
"""

TEST_MODULE_DATA = """
import pytest
from sqlalchemy import func, select

from app import User


@pytest.fixture(scope="module")
def module_user(db):
    user = User(email="module@example.com")
    db.add(user)
    db.commit()
    return user.id            # reloads: the session stays in a transaction


def count(client):
    return client.get("/users/count").json()["count"]


def test_module_data_is_visible(module_user, client):
    assert client.get("/users/module@example.com").json()["id"] == module_user
    client.post("/users/first@example.com")
    assert count(client) == 3


def test_each_test_is_rolled_back_inside_the_module(module_user, client, db):
    assert count(client) == 2
    assert db.scalar(select(func.count()).select_from(User)) == 2


@pytest.fixture(scope="class")
def class_user(module_user, client):
    return client.post("/users/class@example.com").json()["id"]


class TestClassData:
    def test_class_data_is_visible(self, class_user, client):
        assert count(client) == 3
        client.post("/users/inside@example.com")

    def test_and_rolled_back_per_test(self, class_user, client):
        assert count(client) == 3


def test_class_data_is_gone_after_the_class(module_user, client):
    assert client.get("/users/class@example.com").status_code == 404
    assert count(client) == 2
"""

TEST_OTHER_MODULE = """
def test_module_data_of_another_module_is_not_visible(client):
    assert client.get("/users/module@example.com").status_code == 404
    assert client.get("/users/count").json() == {"count": 1}


def test_hard_coded_superuser_lookup(client):
    assert client.get("/users/admin@example.com").status_code == 200
"""

TEST_READ_ONLY_MODULE = """
import pytest


@pytest.fixture(scope="module")
def superuser_id(client):
    # Reads only (like logging in for a token): its tests keep owners of their own.
    return client.get("/users/admin@example.com").json()["id"]


@pytest.mark.parametrize("n", range(3))
def test_ids_start_over_in_every_test(superuser_id, client, n):
    assert superuser_id == 1
    assert client.post(f"/users/new{n}@example.com").json() == {"id": 2}
"""

PACKAGE_CONFTEST = """
import pytest
from sqlalchemy import text


@pytest.fixture(scope="package", autouse=True)
def package_user(db):
    db.execute(text("INSERT INTO users (email, is_superuser) VALUES ('pkg@example.com', false)"))
    db.commit()
"""

PACKAGE_TEST = """
def test_package_data_is_visible(client):
    assert client.get("/users/pkg@example.com").status_code == 200
    assert client.get("/users/count").json() == {"count": 2}
"""


# The app's own settings for inner runs (see server_env in conftest.py).
APP_ENV = {
    "DATABASE_URL": "postgresql+psycopg://app:secret@prod.invalid/app",
}


def write_project(pytester: pytest.Pytester, make_project: MakeProject) -> None:
    make_project(
        CONFIG,
        app=APP,
        conftest=CONFTEST,
        test_shared_session=TEST_SHARED_SESSION,
        test_module_data=TEST_MODULE_DATA,
        test_other_module=TEST_OTHER_MODULE,
        test_read_only_module=TEST_READ_ONLY_MODULE,
    )
    package = pytester.mkpydir("pkg")
    (package / "conftest.py").write_text(PACKAGE_CONFTEST)
    (package / "test_in_package.py").write_text(PACKAGE_TEST)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="serial"),
        pytest.param(["-n", "2"], id="xdist"),
        pytest.param(["-p", "random_order", "--random-order"], id="random-order"),
        pytest.param(["-n", "2", "-p", "random_order", "--random-order"], id="xdist-random"),
    ],
)
def test_fixtures_of_every_scope_share_data_and_tests_stay_isolated(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL, args: list[str]
) -> None:
    write_project(pytester, make_project)
    result = pytester.runpytest_subprocess("-p", "no:randomly", *args)
    result.assert_outcomes(passed=20)
    assert "OwnershipError" not in result.stdout.str()


def test_module_import_that_touches_the_database_says_what_to_do(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL
) -> None:
    make_project(
        CONFIG,
        app=APP,
        test_import_time="""
        from sqlalchemy import func, select
        from sqlalchemy.orm import Session

        from app import User, engine

        with Session(engine) as session:
            COUNT = session.scalar(select(func.count()).select_from(User))


        def test_never_runs():
            pass
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*OwnershipError: Database access by thread 'MainThread' is not allowed*",
            "*test_import_time.py touched the database while pytest was collecting it*"
            "*Move that code into a fixture*",
        ]
    )
