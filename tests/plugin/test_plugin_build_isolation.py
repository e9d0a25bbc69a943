"""Building a template leaves nothing in the test process: env vars, imported app modules.

Migrations (an alembic env.py, a migrate or seed function) often import the
app's settings, which read ``DATABASE_URL`` at import time, and some set env
vars. Built in the test process, the settings module would stay cached with
the template's URL and the variable would stay set. The plugin builds in a
child process (``isolated_builds``) and imports again the project modules that
fingerprinting imported: the tests see their worker's URL and no variable a
migration set, also after a mark's template is built in the middle of the run.
"""

from __future__ import annotations

import uuid

import pytest

from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject

SETTINGS = """
import os
import pathlib

# What the app reads once, at import time, like a pydantic-settings object.
DATABASE_URL = os.environ["DATABASE_URL"]
MIGRATING = False
with pathlib.Path(__file__).with_name("settings-imports.txt").open("a") as f:
    f.write(DATABASE_URL.rsplit("/", 1)[1] + "\\n")
"""

ALEMBIC_ENV = """
import os

from alembic import context
from sqlalchemy import create_engine

os.environ["SET_BY_MIGRATION"] = "env.py"
import settings  # the app's settings, read with the template's URL

settings.MIGRATING = True
engine = create_engine(settings.DATABASE_URL.replace("postgresql://", "postgresql+psycopg://"))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

ALEMBIC_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("widgets")
"""

# A migrate function whose module imports the settings: fingerprinting reads it.
MIGRATE_FN = """
import os

import psycopg

import settings


def migrate(url):
    os.environ["SET_BY_MIGRATION"] = "migrate function"
    settings.MIGRATING = True
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE widgets (id serial PRIMARY KEY)")
"""

SEEDS = """
import os

import psycopg

import settings


def gadgets(url):
    os.environ["SET_BY_SEED"] = "seed"
    settings.MIGRATING = True
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO widgets DEFAULT VALUES")
"""

TESTS = """
import os

import pytest


def check(worker):
    import settings

    assert "SET_BY_MIGRATION" not in os.environ
    assert "SET_BY_SEED" not in os.environ
    assert settings.MIGRATING is False
    # Read at import: the worker's own clone, not a template nor a database that
    # does not exist (also in a test with a database of its own, as documented).
    assert settings.DATABASE_URL.rsplit("/", 1)[1] == worker.url.database
    assert "_worker_" in worker.url.database


def test_before(sqlsandbox_database):
    check(sqlsandbox_database)


@pytest.mark.sandbox(seed="seeds:gadgets")
def test_a_marks_template_built_now(sqlsandbox_database, db_url):
    check(sqlsandbox_database)
    assert os.environ["DATABASE_URL"].rsplit("/", 1)[1] == db_url.rsplit("/", 1)[1]


def test_after(sqlsandbox_database):
    check(sqlsandbox_database)
"""


# The app's own settings for inner runs (see server_env in conftest.py).
APP_ENV = {
    "DATABASE_URL": "postgresql://app:secret@prod.invalid/app",
}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
@pytest.mark.parametrize("source", ["alembic", "function"])
def test_a_template_build_leaves_no_state_in_the_tests(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    source: str,
    workers: list[str],
) -> None:
    migrate = "alembic" if source == "alembic" else "migrations:migrate"
    # New sources, so this run builds its templates rather than finding them.
    token = f"# {uuid.uuid4().hex}\n"
    make_project(
        f'migrate = "{migrate}"\nurl_env = ["DATABASE_URL"]\n',
        settings=SETTINGS,
        seeds=token + SEEDS,
        migrations=token + MIGRATE_FN,
        # The app's settings are imported before any test, as conftest.py files do.
        conftest="import settings\n",
        test_build=TESTS,
    )
    if source == "alembic":
        versions = pytester.path / "alembic" / "versions"
        versions.mkdir(parents=True)
        (pytester.path / "alembic.ini").write_text("[alembic]\nscript_location = alembic\n")
        (versions.parent / "env.py").write_text(token + ALEMBIC_ENV)
        (versions / "0001_widgets.py").write_text(ALEMBIC_REVISION)

    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    result.assert_outcomes(passed=3)
    imports = (pytester.path / "settings-imports.txt").read_text().split()
    # The builds (the run's template, the mark's) imported the settings with the
    # templates' URLs, in other processes.
    assert any("_tpl_" in name for name in imports)
