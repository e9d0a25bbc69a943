"""Migration sources: what builds the schema (and seed data) of a template.

Each source knows two things: which inputs shape its result (for the
fingerprint) and how to apply itself to an empty database. Sources run in a
thread of their own (see ``_template``), so ``asyncio.run`` in an async
``env.py`` or an async callable works even when the caller has a running
event loop.
"""

from __future__ import annotations

import abc
import asyncio
import configparser
import contextlib
import dataclasses
import importlib
import importlib.machinery
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigError, missing_extra
from ..servers._errors import scrub_urls
from . import _dbapi

if TYPE_CHECKING:
    from .._urls import DatabaseURL
    from ._spec import TemplateSpec

__all__ = [
    "AlembicSource",
    "BuildContext",
    "CallableSource",
    "ChildError",
    "MetadataSource",
    "MigrationSource",
    "SQLSource",
    "StepFailed",
    "async_scheme",
    "describe_error",
    "parse_source",
    "sync_scheme",
]

_SYNC_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
_ASYNC_DRIVERS = {"postgresql": "asyncpg", "mysql": "aiomysql", "mariadb": "aiomysql"}
_ASYNC_ENV_MARKERS = ("async_engine_from_config", "create_async_engine", "AsyncEngine", "run_sync")


def _engine(backend: str) -> str:
    return "postgresql" if backend == "postgres" else backend


def sync_scheme(backend: str) -> str:
    """Return the SQLAlchemy scheme with the sync driver sqlsandbox installs for *backend*."""
    backend = _engine(backend)
    driver = _SYNC_DRIVERS.get(backend)
    return f"{backend}+{driver}" if driver else backend


def async_scheme(backend: str) -> str:
    """Return the SQLAlchemy scheme with the async driver sqlsandbox installs for *backend*."""
    backend = _engine(backend)
    if backend == "sqlite":
        return "sqlite+aiosqlite"
    return f"{backend}+{_ASYNC_DRIVERS[backend]}"


class StepFailed(Exception):
    """A named step of a build (one migration, the seed) raised *error*."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(step)
        self.step = step
        self.error = error


class ChildError(Exception):
    """A build step that failed in a child process, described as that process wrote it."""


def describe_error(exc: BaseException) -> str:
    """Return the database error inside *exc* on a few lines, with passwords masked."""
    if isinstance(exc, ChildError):
        return scrub_urls(str(exc))
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip() or type(orig).__name__
    lines = [line for line in text.splitlines() if line.strip()][:4]
    message = f"{type(orig).__name__}: " + "\n    ".join(lines)
    statement = getattr(exc, "statement", None)
    if statement:
        short = " ".join(str(statement).split())
        message += f"\n    SQL: {short[:300]}{'...' if len(short) > 300 else ''}"
    return scrub_urls(message)


@dataclasses.dataclass
class BuildContext:
    """What a source needs to build into one database."""

    url: DatabaseURL
    database: str
    report: Callable[[str], None]
    spec: TemplateSpec

    @property
    def backend(self) -> str:
        """Return the engine of the target database."""
        return _engine(self.url.backend)

    def url_for(self, scheme: str | None) -> DatabaseURL:
        """Return the target database's URL with *scheme* (None: unchanged)."""
        return self.url.with_scheme(scheme) if scheme else self.url

    def callable_url(self) -> DatabaseURL:
        """Return the URL handed to user callables: the configured scheme, else the server's."""
        return self.url_for(self.spec.scheme)


class MigrationSource(abc.ABC):
    """One way of building a schema into an empty database."""

    #: Short label for messages and ``templates ls``.
    label: str

    @abc.abstractmethod
    def inputs(self) -> Iterator[tuple[str, bytes]]:
        """Yield ``(name, content)`` pairs that shape the result, for the fingerprint."""

    @abc.abstractmethod
    def run(self, ctx: BuildContext) -> None:
        """Apply the source to ``ctx.url``; raise StepFailed naming the step that failed."""


def parse_source(spec: str, template: TemplateSpec, *, backend: str) -> MigrationSource:
    """Return the source for a ``migrate`` setting, or raise ConfigError saying the forms."""
    text = spec.strip()
    if text == "alembic":
        return AlembicSource(template)
    if text.startswith("alembic:"):
        # Never a callable: a module named "alembic" would be Alembic itself.
        config = text[len("alembic:") :].strip()
        if not config:
            raise ConfigError(
                f"Invalid migrate setting {spec!r}: write 'alembic' (alembic.ini at the "
                "project root) or 'alembic:path/to/alembic.ini' (--sqlsandbox-migrate, "
                "SQLSANDBOX_MIGRATE or [tool.sqlsandbox] migrate)."
            )
        return AlembicSource(template, config=config)
    if text.startswith("sql:"):
        return SQLSource(template.root / text[4:], backend=backend)
    if text.startswith("metadata:"):
        return MetadataSource(text[9:], root=template.root, backend=backend)
    if _CALLABLE_RE.match(text):
        return CallableSource(text, root=template.root, step="migrate")
    raise ConfigError(
        f"Invalid migrate setting {spec!r}: use 'alembic', 'alembic:path/to/alembic.ini', "
        "'pkg.module:function', 'sql:path/to/dir/' or 'metadata:pkg.module:Base.metadata' "
        "(--sqlsandbox-migrate, SQLSANDBOX_MIGRATE or [tool.sqlsandbox] migrate)."
    )


_CALLABLE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


# -- importing user code -------------------------------------------------------


@contextlib.contextmanager
def _on_sys_path(root: Path) -> Iterator[None]:
    """Make modules under *root* importable for the duration of the block."""
    entry = str(root)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def _import_module(module: str, *, root: Path, setting: str) -> Any:
    with _on_sys_path(root):
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"Cannot import module {module!r} named by {setting}: {exc}. "
                f"Check the spelling and that it is importable from {root}."
            ) from exc


def _resolve(target: str, *, root: Path, setting: str) -> Any:
    module_name, _, attr_path = target.partition(":")
    obj = _import_module(module_name, root=root, setting=setting)
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ConfigError(
                f"Module {module_name!r} has no attribute {attr_path!r} (named by {setting}). "
                "Check the part after ':'."
            ) from None
    return obj


def _find_spec(module: str) -> importlib.machinery.ModuleSpec | None:
    """Find *module* as ``importlib.util.find_spec`` does, without importing its packages.

    A package's ``__init__`` may import the app (its settings, its engine)
    while the env vars do not yet name this run's database; the fingerprint
    needs only the file.
    """
    search: Any = None
    found: importlib.machinery.ModuleSpec | None = None
    parts = module.split(".")
    for index in range(len(parts)):
        name = ".".join(parts[: index + 1])
        loaded = sys.modules.get(name)
        found = getattr(loaded, "__spec__", None) if loaded is not None else None
        if found is None:
            for finder in sys.meta_path:
                find_spec = getattr(finder, "find_spec", None)
                found = find_spec(name, search, None) if find_spec is not None else None
                if found is not None:
                    break
        if found is None:
            if index < len(parts) - 1:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
        search = found.submodule_search_locations
        if index < len(parts) - 1 and search is None:
            child = ".".join(parts[: index + 2])
            raise ModuleNotFoundError(
                f"No module named {child!r}; {name!r} is not a package", name=child
            )
    return found


def _module_source(module: str, *, root: Path, setting: str) -> bytes:
    """Return the source bytes of *module* without running it (where possible)."""
    with _on_sys_path(root):
        try:
            found = _find_spec(module)
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"Cannot find module {module!r} named by {setting}: {exc}. Check the spelling, "
                f"and run python -c 'import {module}' in {root} to see why it does not import."
            ) from exc
    if found is None:
        raise ConfigError(
            f"Cannot find module {module!r} named by {setting}. "
            f"Check the spelling and that it is importable from {root}."
        )
    if found.origin and os.path.isfile(found.origin):
        return Path(found.origin).read_bytes()
    return module.encode()


def _call(fn: Callable[..., Any], url: str) -> None:
    result = fn(url)
    if inspect.isawaitable(result):
        # Sources run in a thread of their own, so there is no running loop here.
        asyncio.run(_await(result))


async def _await(awaitable: Any) -> None:
    await awaitable


class CallableSource(MigrationSource):
    """``"pkg.module:function"``: a sync or async callable receiving the URL string."""

    def __init__(self, target: str, *, root: Path, step: str) -> None:
        self.target = target
        self.root = root
        self.step = step
        self.label = target

    def inputs(self) -> Iterator[tuple[str, bytes]]:
        module = self.target.partition(":")[0]
        yield (
            f"{self.step}:{self.target}",
            _module_source(module, root=self.root, setting=f"{self.step} = {self.target!r}"),
        )

    def run(self, ctx: BuildContext) -> None:
        fn = _resolve(self.target, root=self.root, setting=f"{self.step} = {self.target!r}")
        if not callable(fn):
            raise ConfigError(
                f"{self.step} = {self.target!r} does not name a callable: it names a "
                f"{type(fn).__name__}. Point it at a function (sync or async) that takes the "
                f"database URL string, in --sqlsandbox-{self.step}, "
                f"SQLSANDBOX_{self.step.upper()} or [tool.sqlsandbox] {self.step}."
            )
        name = f"{self.step} {self.target}"
        ctx.report(f"running {name}")
        try:
            with _on_sys_path(self.root):
                _call(fn, ctx.callable_url().render())
        except Exception as exc:
            raise StepFailed(name, exc) from exc


class SQLSource(MigrationSource):
    """``"sql:path/"``: every ``.sql`` file below a folder, in lexical order of their paths."""

    def __init__(self, folder: Path, *, backend: str) -> None:
        self.folder = folder
        self.backend = _engine(backend)
        self.label = f"sql:{folder}"

    def files(self) -> list[Path]:
        """Return the SQL files in the order they run."""
        if not self.folder.is_dir():
            raise ConfigError(
                f"SQL migration folder {self.folder} does not exist: fix migrate = "
                "'sql:path/' (relative to the project root)."
            )
        found = [p for p in self.folder.rglob("*.sql") if p.is_file()]
        return sorted(found, key=lambda p: p.relative_to(self.folder).as_posix())

    def inputs(self) -> Iterator[tuple[str, bytes]]:
        for path in self.files():
            yield f"sql:{path.relative_to(self.folder).as_posix()}", path.read_bytes()

    def run(self, ctx: BuildContext) -> None:
        files = self.files()
        conn = _dbapi.connect(ctx.url, autocommit=self.backend != "postgresql")
        try:
            for index, path in enumerate(files, 1):
                step = path.relative_to(self.folder).as_posix()
                ctx.report(f"running migration {index}/{len(files)}: {step}")
                try:
                    _dbapi.run_script(conn, self.backend, path.read_text(encoding="utf-8"))
                    if self.backend == "postgresql":
                        # One transaction per file: a failing file leaves no half of itself.
                        conn.commit()
                except Exception as exc:
                    raise StepFailed(step, exc) from exc
        finally:
            conn.close()


class MetadataSource(MigrationSource):
    """``"metadata:pkg.module:Base.metadata"``: SQLAlchemy ``create_all`` with a sync driver."""

    def __init__(self, target: str, *, root: Path, backend: str) -> None:
        if not _CALLABLE_RE.match(target):
            raise ConfigError(
                f"Invalid migrate setting 'metadata:{target}': use "
                "'metadata:pkg.module:Base.metadata'."
            )
        self.target = target
        self.root = root
        self.backend = _engine(backend)
        self.label = f"metadata:{target}"

    def metadata(self) -> Any:
        """Import and return the MetaData object."""
        try:
            from sqlalchemy import MetaData
        except ImportError:
            raise missing_extra("sqlalchemy", "sqlalchemy", "migrate = 'metadata:...'") from None
        obj = _resolve(self.target, root=self.root, setting=f"migrate = 'metadata:{self.target}'")
        if not isinstance(obj, MetaData):
            raise ConfigError(
                f"migrate = 'metadata:{self.target}' names a {type(obj).__name__}, not a "
                "sqlalchemy MetaData: point it at Base.metadata (or your MetaData object)."
            )
        return obj

    def inputs(self) -> Iterator[tuple[str, bytes]]:
        # The DDL itself is the most faithful input: it changes exactly when
        # the schema does, wherever the models live.
        from sqlalchemy.schema import CreateIndex, CreateTable

        dialect = _dialect(self.backend)
        metadata = self.metadata()
        for table in metadata.sorted_tables:
            parts = [str(CreateTable(table).compile(dialect=dialect))]
            parts += [repr(column.type) for column in table.columns]
            parts += sorted(
                str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes
            )
            yield f"table:{table.fullname}", "\n".join(parts).encode()

    def run(self, ctx: BuildContext) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        metadata = self.metadata()
        step = f"create_all {self.target}"
        ctx.report(f"running {step} ({len(metadata.tables)} tables)")
        url = ctx.url_for(sync_scheme(self.backend)).render()
        engine = create_engine(url, poolclass=NullPool)
        try:
            metadata.create_all(engine)
        except Exception as exc:
            raise StepFailed(step, exc) from exc
        finally:
            engine.dispose()


def _dialect(backend: str) -> Any:
    if backend == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.dialect()  # type: ignore[no-untyped-call]
    if backend in ("mysql", "mariadb"):
        from sqlalchemy.dialects import mysql

        return mysql.dialect()
    from sqlalchemy.dialects import sqlite

    return sqlite.dialect()


class AlembicSource(MigrationSource):
    """``"alembic"`` or ``"alembic:path/to/alembic.ini"``: ``upgrade heads`` run programmatically.

    The configuration is *config* (from ``migrate``), else the spec's
    ``alembic_config``, else ``alembic.ini`` then ``[tool.alembic]`` of
    ``pyproject.toml`` at the project root. Paths are relative to the root.
    """

    def __init__(self, template: TemplateSpec, *, config: str | None = None) -> None:
        self.root = template.root
        if config and template.alembic_config:
            ours, theirs = self.root / config, self.root / template.alembic_config
            if ours.resolve() != theirs.resolve():
                raise ConfigError(
                    f"migrate = 'alembic:{config}' and alembic_config = "
                    f"{template.alembic_config!r} name different Alembic configurations "
                    f"({ours} and {theirs}): keep only one of them."
                )
        self.config_path = config or template.alembic_config
        #: Where the configuration path came from, for the fix in messages.
        self.config_setting = (
            f"the path in migrate = 'alembic:{config}' (--sqlsandbox-migrate, "
            "SQLSANDBOX_MIGRATE or [tool.sqlsandbox] migrate)"
            if config
            else "alembic_config (--sqlsandbox-alembic-config, SQLSANDBOX_ALEMBIC_CONFIG)"
        )
        self.label = f"alembic:{config}" if config else "alembic"
        self.config_file: Path | None = None
        self.script_location: str | None = None

    def _config(self) -> Any:
        try:
            from alembic.config import Config
        except ImportError:
            raise missing_extra("alembic", "alembic", "migrate = 'alembic'") from None
        ini: Path | None = None
        toml: Path | None = None
        if self.config_path:
            path = (self.root / self.config_path).resolve()
            if not path.is_file():
                raise ConfigError(
                    f"Alembic configuration {path} does not exist: fix {self.config_setting}; "
                    f"it is relative to the project root {self.root}."
                )
            if path.suffix == ".toml":
                toml = path
            else:
                ini = path
        else:
            if (self.root / "alembic.ini").is_file():
                ini = self.root / "alembic.ini"
            pyproject = self.root / "pyproject.toml"
            if pyproject.is_file() and "[tool.alembic]" in pyproject.read_text(encoding="utf-8"):
                toml = pyproject
        if ini is None and toml is None:
            raise ConfigError(
                f"migrate = 'alembic' but there is no alembic.ini (or [tool.alembic] in "
                f"pyproject.toml) in {self.root}. Run 'alembic init', or point migrate = "
                "'alembic:path/to/alembic.ini' or alembic_config (--sqlsandbox-alembic-config) "
                "at your configuration."
            )
        config_file = ini or toml
        assert config_file is not None
        self.config_file = config_file
        kwargs: dict[str, Any] = {"file_": str(ini) if ini else None}
        if toml is not None:
            kwargs["toml_file"] = str(toml)
        cfg = Config(**kwargs)
        getter = getattr(cfg, "get_alembic_option", cfg.get_main_option)
        location = getter("script_location")
        if not location:
            raise ConfigError(
                f"The Alembic configuration in {config_file} has no script_location; "
                "add it (for example script_location = migrations)."
            )
        # Alembic resolves relative paths against the working directory; the
        # project root is what the user means wherever pytest was started (or,
        # failing that, the folder of a configuration kept below the root).
        if ":" not in location and not os.path.isabs(location):
            resolved = self.root / location
            beside = config_file.parent / location
            if not resolved.is_dir() and beside.is_dir():
                resolved = beside
            location = str(resolved)
            cfg.set_main_option("script_location", location)
        self.script_location = location
        return cfg

    def _script(self) -> tuple[Any, Any]:
        from alembic.script import ScriptDirectory

        cfg = self._config()
        try:
            return cfg, ScriptDirectory.from_config(cfg)
        except Exception as exc:
            detail = scrub_urls(" ".join(str(exc).split()) or type(exc).__name__)
            raise ConfigError(
                f"Cannot load the Alembic scripts of {self.config_file} (script_location "
                f"{self.script_location}): {detail.rstrip('.')}. Run 'alembic -c "
                f"{self.config_file} heads' to see the same error, then fix the folder or the "
                "revision file it names."
            ) from exc

    def plain_locations(self) -> tuple[Path, list[Path]] | None:
        """Read the scripts and versions folders from a plain alembic.ini, without alembic.

        A cached start only fingerprints the files, and importing alembic
        would cost it about 0.15 s. Anything beyond the common case (another
        configuration file, ``[tool.alembic]``, package resources,
        ``version_locations``) gives None: alembic itself resolves those.
        """
        ini = self.root / "alembic.ini"
        pyproject = self.root / "pyproject.toml"
        if self.config_path or not ini.is_file():
            return None
        if pyproject.is_file() and "[tool.alembic]" in pyproject.read_text(encoding="utf-8"):
            return None
        # What alembic's Config does: a ConfigParser with `here` as a default.
        parser = configparser.ConfigParser(defaults={"here": os.path.abspath(ini.parent)})
        try:
            parser.read(ini, encoding="utf-8")
            if not parser.has_option("alembic", "script_location") or parser.has_option(
                "alembic", "version_locations"
            ):
                return None
            location = parser.get("alembic", "script_location")
        except configparser.Error:
            return None
        if not location or (":" in location and not os.path.isabs(location)):
            return None  # "package:folder", or a Windows drive: alembic knows
        script_dir = Path(location) if os.path.isabs(location) else self.root / location
        if not script_dir.is_dir():
            return None
        return script_dir, [Path(script_dir, "versions").absolute()]

    def inputs(self) -> Iterator[tuple[str, bytes]]:
        plain = self.plain_locations()
        if plain is not None:
            script_dir, locations = plain
        else:
            _cfg, script = self._script()
            script_dir = Path(script.dir)
            locations = getattr(script, "_version_locations", None) or [Path(script.versions)]
        if self.config_path and self.config_file is not None:
            # Another configuration may point at other scripts: say which one built it.
            try:
                shown = self.config_file.relative_to(self.root).as_posix()
            except ValueError:
                shown = str(self.config_file)
            yield "alembic:config", shown.encode()
        env = script_dir / "env.py"
        if env.is_file():
            yield "alembic:env.py", env.read_bytes()
        for location in locations:
            location = Path(location)
            if not location.is_dir():
                continue
            for path in sorted(location.rglob("*.py")):
                if "__pycache__" in path.parts:
                    continue
                try:
                    rel = path.relative_to(script_dir).as_posix()
                except ValueError:
                    rel = path.name
                yield f"alembic:{rel}", path.read_bytes()

    def _scheme(self, ctx: BuildContext, script_dir: Path) -> str:
        if ctx.spec.scheme:
            return ctx.spec.scheme
        env = script_dir / "env.py"
        text = env.read_text(encoding="utf-8") if env.is_file() else ""
        if any(marker in text for marker in _ASYNC_ENV_MARKERS):
            return async_scheme(ctx.backend)
        return sync_scheme(ctx.backend)

    def run(self, ctx: BuildContext) -> None:
        from alembic.runtime.environment import EnvironmentContext

        cfg, script = self._script()
        url = ctx.url_for(self._scheme(ctx, Path(script.dir))).render()
        # Both spellings env.py files use: the main option, and attributes for
        # recipes that read config.attributes (never written to a file).
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        cfg.attributes["sqlalchemy.url"] = url
        cfg.attributes["sqlsandbox.template"] = ctx.database
        current: list[str] = []
        try:
            revisions = list(script.walk_revisions())[::-1]
        except Exception as exc:
            raise StepFailed("loading the Alembic revisions", exc) from exc
        for index, revision in enumerate(revisions, 1):
            _announce_upgrade(revision, index, len(revisions), ctx.report, current)

        def upgrade(rev: Any, context: Any) -> Any:
            return script._upgrade_revs("heads", rev)

        try:
            with (
                _on_sys_path(self.root),
                _preserved_logging(),
                EnvironmentContext(
                    cfg,
                    script,
                    fn=upgrade,
                    as_sql=False,
                    starting_rev=None,
                    destination_rev="heads",
                    tag=None,
                ),
            ):
                script.run_env()
        except Exception as exc:
            step = current[-1] if current else "alembic env.py"
            raise StepFailed(step, exc) from exc


def _announce_upgrade(
    revision: Any, index: int, total: int, report: Callable[[str], None], current: list[str]
) -> None:
    """Wrap the revision's ``upgrade`` so the build reports it before it runs."""
    module = revision.module
    original = module.upgrade
    doc = (revision.doc or "").strip().splitlines()
    label = f"{revision.revision}" + (f" ({doc[0]})" if doc else "")

    def upgrade(*args: Any, **kwargs: Any) -> Any:
        current.append(label)
        report(f"running migration {index}/{total}: {label}")
        return original(*args, **kwargs)

    module.upgrade = upgrade


@contextlib.contextmanager
def _preserved_logging() -> Iterator[None]:
    """Undo what ``fileConfig`` in env.py does to loggers that existed before.

    Alembic's template env.py calls ``logging.config.fileConfig`` with
    ``disable_existing_loggers=True``, which silences the application's and
    pytest's loggers for the rest of the run.
    """
    manager = logging.Logger.manager
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    saved = {
        name: (logger.disabled, logger.level, list(logger.handlers), logger.propagate)
        for name, logger in list(manager.loggerDict.items())
        if isinstance(logger, logging.Logger)
    }
    try:
        yield
    finally:
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        for name, (disabled, level, handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.disabled = disabled
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate
