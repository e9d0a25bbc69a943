"""Route SQLAlchemy engines (sync and asyncio) through a sandbox.

::

    from sqlsandbox import Sandbox
    from sqlsandbox.sqlalchemy import install

    sandbox = Sandbox(test_database_url)
    install(app.db.engine, sandbox)        # the engine the app built at import time
    with sandbox.checkout():
        ...                                 # app commits are rolled back at checkin

See ``docs/sqlalchemy.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ._exceptions import ConfigError, missing_extra

try:
    import sqlalchemy as _sqlalchemy  # noqa: F401 - only to report a missing extra clearly
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("sqlalchemy", "sqlalchemy", "Routing SQLAlchemy engines") from exc

from .drivers._sqlalchemy import SandboxPool, install, is_installed, uninstall

if TYPE_CHECKING:
    from .ownership import Sandbox

__all__ = ["SandboxPool", "import_engine", "install", "installed", "is_installed", "uninstall"]


@contextmanager
def installed(engine: Any, sandbox: Sandbox) -> Iterator[Any]:
    """Route *engine* through *sandbox* for the duration of the block."""
    already = is_installed(engine, sandbox)
    install(engine, sandbox)
    try:
        yield engine
    finally:
        if not already:
            uninstall(engine)


def import_engine(spec: str) -> Any:
    """Import an engine named ``"package.module:attribute"`` (the ``engines`` setting).

    Raises ConfigError when the module or attribute is missing or the object
    is not an Engine or AsyncEngine.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(
            f"Cannot read engine {spec!r}: write it as 'package.module:attribute', "
            "for example 'app.db:engine', in the `engines` setting."
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"Cannot import module {module_name!r} for engine {spec!r}: {exc}. "
            "Check the `engines` setting and that the app is importable (pythonpath)."
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"Module {module_name!r} has no attribute {attribute!r} (engine {spec!r}). "
                "Check the `engines` setting."
            ) from None
    from sqlalchemy.engine import Engine

    if not isinstance(getattr(obj, "sync_engine", obj), Engine):
        raise ConfigError(
            f"{spec!r} is a {type(obj).__name__}, not a SQLAlchemy Engine or AsyncEngine. "
            "Name the engine object in the `engines` setting."
        )
    return obj
