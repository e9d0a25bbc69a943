"""Database URLs: parse, rebuild, and mask the password for display.

A small parser of our own so that the server layer does not need SQLAlchemy.
It understands ``scheme[+driver]://user:password@host:port/database?query``,
unix-socket hosts given as ``?host=/path`` and SQLite paths.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ._exceptions import ConfigError

__all__ = ["DatabaseURL", "mask_url"]

_MASK = "***"


@dataclasses.dataclass(frozen=True)
class DatabaseURL:
    """An immutable, parsed database URL."""

    scheme: str
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str | DatabaseURL) -> DatabaseURL:
        """Parse *url*; raise ConfigError naming the masked URL if it is malformed."""
        if isinstance(url, DatabaseURL):
            return url
        if "://" not in url:
            raise ConfigError(
                f"Cannot parse database URL {mask_url(url)!r}: expected "
                "'scheme://user:password@host:port/database' or 'sqlite:///path'. "
                "Fix the --sqlsandbox-url flag, SQLSANDBOX_URL or [tool.sqlsandbox] url."
            )
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(
                f"Database URL {mask_url(url)!r} has an invalid port: {exc}. "
                "Use a number from 1 to 65535."
            ) from None
        path = parts.path
        database: str | None
        if parts.scheme.startswith("sqlite"):
            database = unquote(path[1:]) if path.startswith("/") else unquote(path)
        else:
            database = unquote(path.lstrip("/")) or None
        return cls(
            scheme=parts.scheme,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            host=unquote(parts.hostname) if parts.hostname else None,
            port=port,
            database=database or None,
            query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
        )

    @property
    def backend(self) -> str:
        """The engine part of the scheme: ``postgresql+asyncpg`` -> ``postgresql``."""
        return self.scheme.split("+", 1)[0]

    @property
    def driver(self) -> str | None:
        """The driver part of the scheme, if any: ``postgresql+asyncpg`` -> ``asyncpg``."""
        return self.scheme.split("+", 1)[1] if "+" in self.scheme else None

    def query_value(self, key: str) -> str | None:
        """Return the last value of query parameter *key*, or None."""
        found = None
        for k, v in self.query:
            if k == key:
                found = v
        return found

    def replace(self, **changes: object) -> DatabaseURL:
        """Return a copy with the given fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def with_database(self, database: str | None) -> DatabaseURL:
        """Return the same server URL pointing at another database."""
        return dataclasses.replace(self, database=database)

    def with_scheme(self, scheme: str) -> DatabaseURL:
        """Return the same URL with another scheme (for example another driver)."""
        return dataclasses.replace(self, scheme=scheme)

    def render(self, *, hide_password: bool = False) -> str:
        """Rebuild the URL as a string; with *hide_password* the password is masked."""
        netloc = ""
        if self.username is not None:
            netloc = quote(self.username, safe="")
            if self.password is not None:
                shown = _MASK if hide_password else quote(self.password, safe="")
                netloc += f":{shown}"
            netloc += "@"
        if self.host is not None:
            host = self.host
            netloc += f"[{host}]" if ":" in host else quote(host, safe="")
        if self.port is not None:
            netloc += f":{self.port}"
        if self.backend == "sqlite":
            path = "/" + self.database if self.database else ""
        else:
            path = "/" + quote(self.database, safe="") if self.database else "/"
        query = f"?{urlencode(self.query)}" if self.query else ""
        return f"{self.scheme}://{netloc}{path}{query}"

    def masked(self) -> str:
        """Render with the password replaced by ``***``: safe for messages and logs."""
        return self.render(hide_password=True)

    def __str__(self) -> str:
        return self.masked()


def mask_url(url: str | DatabaseURL) -> str:
    """Return *url* with any password replaced by ``***``; never raises."""
    if isinstance(url, DatabaseURL):
        return url.masked()
    try:
        return DatabaseURL.parse(url).masked()
    except Exception:
        # Unparseable: mask anything between '://user:' and '@' by hand.
        head, sep, rest = url.partition("://")
        if not sep or "@" not in rest:
            return url
        creds, _, tail = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{head}://{user}:{_MASK}@{tail}" if ":" in creds else url
