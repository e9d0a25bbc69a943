"""Alembic environment: synchronous, psycopg 3.

The URL comes from whoever runs Alembic: ``config.attributes`` or the
``sqlalchemy.url`` option (set by sqlsandbox when it builds its template, or by
a test that migrates its own database), else ``SYNC_DATABASE_URL`` or
``DATABASE_URL``. Importing
``reminders.models`` builds no engine, so migrating never touches the app's
import-time engines.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from reminders.models import Base
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = (
        config.attributes.get("sqlalchemy.url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("SYNC_DATABASE_URL")
        or os.environ["DATABASE_URL"]
    )
    # Whatever driver the caller named, migrations run on psycopg 3.
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
