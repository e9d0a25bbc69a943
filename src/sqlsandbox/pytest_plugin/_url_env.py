"""``url_env``: point the app's env vars at the database a worker or test uses.

The rendering is pure (:func:`render_url_env`); :class:`UrlEnv` applies it
to ``os.environ`` and puts the user's values back afterwards.

With the list form each variable keeps the form the user wrote: a
``postgresql+asyncpg://...?ssl=disable`` value becomes the sandbox database
with the same scheme and options. When the user's value names another
engine (``sqlite+aiosqlite:///app.db`` while tests run on PostgreSQL), an
async driver is swapped for the same engine's async driver, so an app that
calls ``create_async_engine`` still works.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from .._urls import DatabaseURL

__all__ = ["UrlEnv", "adapt_url", "read_dotenv", "render_url_env"]

# Engines spelled differently that take the same URLs.
_FAMILY = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}
# Drivers that only work with create_async_engine, and each engine's async driver.
_ASYNC_ONLY = frozenset({"asyncpg", "psycopg_async", "aiosqlite", "aiomysql", "asyncmy"})
_ASYNC_DRIVER = {"postgresql": "asyncpg", "mysql": "aiomysql", "sqlite": "aiosqlite"}
# Query options that say where the server is or who logs in: they belong to the
# sandbox database, never to the user's original value.
_LOCATION_KEYS = frozenset(
    {"host", "hostaddr", "port", "dbname", "database", "user", "password", "unix_socket"}
)
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\+[A-Za-z0-9_]+)?$")


def _family(backend: str) -> str:
    return _FAMILY.get(backend.lower(), backend.lower())


def adapt_url(database: DatabaseURL, original: str | None) -> DatabaseURL:
    """Return *database* in the form of the user's *original* value.

    *original* may be a URL, a bare scheme such as ``postgresql+psycopg``,
    or None/anything else (then *database* is returned unchanged).
    """
    if not original or not original.strip():
        return database
    original = original.strip()
    query: tuple[tuple[str, str], ...] = ()
    if _SCHEME_RE.match(original):
        scheme = original
    else:
        try:
            parsed = DatabaseURL.parse(original)
        except Exception:
            # Not a URL (a libpq "host=... dbname=..." string, say): nothing to keep.
            return database
        scheme, query = parsed.scheme, parsed.query
    backend, _, driver = scheme.partition("+")
    target = _family(database.backend)
    if _family(backend) == target:
        own = {k for k, _ in database.query}
        kept = tuple((k, v) for k, v in query if k not in _LOCATION_KEYS and k not in own)
        return database.replace(scheme=scheme, query=kept + database.query)
    if driver in _ASYNC_ONLY and target in _ASYNC_DRIVER:
        return database.with_scheme(f"{database.backend}+{_ASYNC_DRIVER[target]}")
    return database


def render_url_env(
    database: DatabaseURL,
    template: str = "{url}",
    original: str | None = None,
    *,
    hide_password: bool = False,
) -> str:
    """Render one ``url_env`` value for *database*.

    ``{url}`` is *database* in the form of *original* (see :func:`adapt_url`);
    ``{driver}`` its scheme; ``{host}``, ``{port}``, ``{user}``, ``{password}``
    and ``{database}`` its parts (empty when absent). With *hide_password*
    the result is safe to print.
    """
    url = adapt_url(database, original)
    host = url.host or url.query_value("host") or ""
    return template.format_map(
        {
            "url": url.render(hide_password=hide_password),
            "driver": url.scheme,
            "host": host,
            "port": "" if url.port is None else str(url.port),
            "user": url.username or "",
            "password": "***" if hide_password and url.password else (url.password or ""),
            "database": url.database or "",
        }
    )


class UrlEnv:
    """Point the configured env vars at a database, and put them back.

    The user's values are captured once, at the first :meth:`point`, so a
    later re-point (a test with its own database) still adapts to what the
    user wrote, not to what sqlsandbox set.
    """

    def __init__(
        self,
        templates: Mapping[str, str],
        environ: MutableMapping[str, str] | None = None,
        dotenv: Mapping[str, str] | None = None,
    ) -> None:
        self.templates = dict(templates)
        self.environ: MutableMapping[str, str] = os.environ if environ is None else environ
        #: Values from the project's ``.env``: the form to keep when the env var is unset.
        self.dotenv = dict(dotenv or {})
        self._originals: dict[str, str | None] | None = None

    def values(self, database: DatabaseURL, *, hide_password: bool = False) -> dict[str, str]:
        """Return what each variable is (or would be) set to for *database*."""
        originals = self._originals
        if originals is None:
            originals = {name: self.environ.get(name) for name in self.templates}
        return {
            name: render_url_env(
                database,
                template,
                originals[name] or self.dotenv.get(name),
                hide_password=hide_password,
            )
            for name, template in self.templates.items()
        }

    def point(self, database: DatabaseURL) -> None:
        """Set every configured variable for *database*."""
        values = self.values(database)
        if self._originals is None:
            self._originals = {name: self.environ.get(name) for name in self.templates}
        self.environ.update(values)

    def restore(self) -> None:
        """Give every variable back the value it had before the first :meth:`point`."""
        if self._originals is None:
            return
        for name, value in self._originals.items():
            if value is None:
                self.environ.pop(name, None)
            else:
                self.environ[name] = value
        self._originals = None


_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_dotenv(path: Path) -> dict[str, str]:
    """Read ``KEY=value`` lines of a ``.env`` file (quotes stripped); {} if there is none."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        found = _DOTENV_LINE.match(line)
        if found is None or line.lstrip().startswith("#"):
            continue
        value = found[2]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[found[1]] = value
    return values
