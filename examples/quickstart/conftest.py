"""Temporary wiring, until the sqlsandbox plugin provides ``db_session`` itself.

It does by hand, with sqlsandbox's server layer, what the plugin will do from
the ``[tool.sqlsandbox]`` settings alone: one database per xdist worker on the
configured (or embedded) server, the schema created once, and every test in a
transaction that is rolled back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session
from todo_app.models import Base

from sqlsandbox.pytest_plugin import get_recorder, get_settings
from sqlsandbox.servers import open_server


@pytest.fixture(scope="session")
def _worker_engine(pytestconfig: pytest.Config) -> Iterator[Engine]:
    recorder = get_recorder(pytestconfig)
    server = open_server(get_settings(pytestconfig).url)
    recorder.record_server(server.url, server.version())
    name = f"sqlsandbox_quickstart_{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    recorder.record_clone()
    engine = create_engine(server.database_url(name, scheme="postgresql+psycopg").render())
    try:
        Base.metadata.create_all(engine)
        yield engine
    finally:
        engine.dispose()
        server.drop_database(name)
        server.close()


@pytest.fixture
def db_session(_worker_engine: Engine, pytestconfig: pytest.Config) -> Iterator[Session]:
    get_recorder(pytestconfig).record_test("transaction")
    with _worker_engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            transaction.rollback()
