"""Pick the backend for a URL, and fall back to the embedded PostgreSQL when none is given."""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigError
from .._urls import DatabaseURL, mask_url
from ._errors import URL_HINT

if TYPE_CHECKING:
    from pathlib import Path

    from ._base import Server

__all__ = ["BUILTIN_BACKENDS", "connect_server", "open_server"]

#: The engines sqlsandbox administers out of the box.
BUILTIN_BACKENDS = ("postgresql", "mariadb", "sqlite")

# URL engine (the scheme without "+driver") -> (module, class); imported on first use.
_BACKEND_CLASSES: dict[str, tuple[str, str]] = {
    "postgresql": ("._postgres", "PostgresServer"),
    "postgres": ("._postgres", "PostgresServer"),
    "mariadb": ("._mariadb", "MariaDBServer"),
    "mysql": ("._mariadb", "MariaDBServer"),
    "sqlite": ("._sqlite", "SQLiteServer"),
}
_KNOWN_SCHEMES = (
    "postgresql://, postgres://, postgresql+<driver>://, mysql://, mariadb://, "
    "mysql+<driver>://, mariadb+<driver>://, sqlite, sqlite:///<directory>, sqlite+<driver>"
)


def _parse(url: str | DatabaseURL) -> DatabaseURL:
    if isinstance(url, DatabaseURL):
        return url
    text = url.strip()
    # "sqlite" alone (or "sqlite+aiosqlite") means the default SQLite directory.
    if text.split("+", 1)[0] == "sqlite" and "://" not in text and ":" not in text:
        return DatabaseURL(scheme=text)
    return DatabaseURL.parse(text)


def connect_server(url: str | DatabaseURL, **options: Any) -> Server:
    """Return the backend for *url*; it connects lazily, on its first call.

    *options* go to the backend class (for example ``clone_strategy="file_copy"``
    for PostgreSQL). Raises ConfigError for an unknown scheme or a missing driver.
    """
    try:
        parsed = _parse(url)
    except ConfigError:
        raise
    except Exception:
        raise ConfigError(
            f"Cannot parse database URL {mask_url(str(url))!r}. Fix {URL_HINT}."
        ) from None
    target = _BACKEND_CLASSES.get(parsed.backend)
    if target is None:
        raise ConfigError(
            f"Unknown database URL scheme {parsed.scheme!r} in {parsed.masked()}: "
            f"sqlsandbox knows {_KNOWN_SCHEMES}. Fix {URL_HINT}."
        )
    module_name, class_name = target
    module = importlib.import_module(module_name, __package__)
    cls: type[Server] = getattr(module, class_name)
    try:
        return cls(parsed, **options)
    except TypeError as exc:
        known = _options(cls)
        takes = (
            f"takes only {', '.join(f'{name}=' for name in known)}: remove the others or "
            "fix their spelling"
            if known
            else "takes no options: remove them"
        )
        raise ConfigError(
            f"Invalid option for the {cls.backend} server at {parsed.masked()}: {exc}. "
            f"{cls.__name__} {takes}."
        ) from None


def _options(cls: type[Server]) -> list[str]:
    """Return the keyword options *cls* takes besides the URL."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return [
        p.name
        for p in parameters
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "url")
    ]


def open_server(
    url: str | DatabaseURL | None = None,
    *,
    cache_dir: Path | None = None,
    **options: Any,
) -> Server:
    """Return a ready server: the one at *url*, or the embedded PostgreSQL when None.

    Unlike :func:`connect_server` it checks that the server answers, so a wrong
    URL fails here with one clear ProvisioningError. *cache_dir* is where the
    embedded PostgreSQL keeps its cluster (ignored when *url* is given).
    """
    if url is None or (isinstance(url, str) and not url.strip()):
        from ._embedded import (  # type: ignore[import-not-found,unused-ignore]
            ensure_embedded_server,
        )

        url = ensure_embedded_server(cache_dir=cache_dir)
    server = connect_server(url, **options)
    try:
        server.version()
    except BaseException:
        server.close()
        raise
    return server
