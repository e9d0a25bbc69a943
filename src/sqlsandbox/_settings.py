"""Settings: one frozen object from pyproject.toml, env vars and flags.

Every key is declared once, as a field of :class:`Settings` carrying a
:class:`Key` (kind, default, help). The pytest options, the env var parsing,
the validation and docs/configuration.md are all generated from that table.

Precedence: ``--sqlsandbox-KEY`` flag > ``SQLSANDBOX_KEY`` env var >
``[tool.sqlsandbox]`` in the rootdir's pyproject.toml > default.

This module does not import pytest, so the CLI can load the same settings.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import string
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from ._exceptions import ConfigError
from ._urls import mask_url

__all__ = [
    "DRIVERS",
    "ENV_PREFIX",
    "FLAG_PREFIX",
    "IMPORT_TARGET_RE",
    "KEYS",
    "URL_ENV_FIELDS",
    "Key",
    "Settings",
    "load_settings",
    "reference_markdown",
    "setting_key",
]

ENV_PREFIX: Final = "SQLSANDBOX_"
FLAG_PREFIX: Final = "--sqlsandbox-"
#: Direct-driver routes the ``drivers`` setting may install (``sqlsandbox.<name>.install``).
DRIVERS: Final = ("asyncpg", "psycopg", "sqlite", "mysql")
#: Placeholders a ``url_env`` template may use.
URL_ENV_FIELDS: Final = ("url", "driver", "host", "port", "user", "password", "database")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
#: ``package.module:attribute``, as the import-target settings and the mark take them.
IMPORT_TARGET_RE: Final = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREDENTIALS_RE = re.compile(r":[^:@/]*@")


class _BadValue(Exception):
    """A value does not fit its kind; the argument says what would fit."""


# -- kinds: how one key's value is read from TOML and from text ---------------


class _Kind:
    """How values of one key are parsed from TOML objects and from text."""

    #: Shown in docs and messages: what a value of this kind looks like.
    doc = ""
    #: Metavar of the flag; None for on/off switches.
    metavar: str | None = "VALUE"

    def from_file(self, value: object) -> Any:
        """Convert a TOML value; raise _BadValue saying what is allowed."""
        if isinstance(value, str):
            return self.from_text(value)
        raise _BadValue(self.doc)

    def from_text(self, text: str) -> Any:
        """Convert an env var or flag value; raise _BadValue saying what is allowed."""
        raise NotImplementedError

    def render(self, value: Any) -> str:
        """Render a value as TOML, for docs."""
        return json.dumps(value)


class _Text(_Kind):
    def __init__(self, doc: str, pattern: re.Pattern[str] | None = None) -> None:
        self.doc = doc
        self.pattern = pattern

    def from_text(self, text: str) -> str:
        text = text.strip()
        if not text or (self.pattern is not None and not self.pattern.match(text)):
            raise _BadValue(self.doc)
        return text

    def render(self, value: Any) -> str:
        return "" if value is None else json.dumps(value)


class _Choice(_Kind):
    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.doc = "one of " + ", ".join(repr(c) for c in choices)
        self.metavar = "|".join(choices)

    def from_text(self, text: str) -> str:
        value = text.strip().lower()
        if value not in self.choices:
            raise _BadValue(self.doc)
        return value


class _Bool(_Kind):
    doc = "true or false (env and flags also take 1/0, yes/no, on/off)"
    metavar = None

    def from_file(self, value: object) -> bool:
        if isinstance(value, bool):
            return value
        return super().from_file(value)  # type: ignore[no-any-return]

    def from_text(self, text: str) -> bool:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise _BadValue(self.doc)

    def render(self, value: Any) -> str:
        return "true" if value else "false"


class _Seconds(_Kind):
    """A positive number of seconds; 0 (or off/none/false) disables it."""

    doc = "a number of seconds >= 0; 0, 'off' or false disables it"
    metavar = "SECONDS"

    def from_file(self, value: object) -> float | None:
        if value is False:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self._check(float(value))
        return super().from_file(value)  # type: ignore[no-any-return]

    def from_text(self, text: str) -> float | None:
        word = text.strip().lower()
        if word in {"off", "none", "false", "no"}:
            return None
        try:
            return self._check(float(word))
        except ValueError:
            raise _BadValue(self.doc) from None

    def _check(self, value: float) -> float | None:
        if value != value or value < 0 or value == float("inf"):
            raise _BadValue(self.doc)
        return value or None

    def render(self, value: Any) -> str:
        return "0 (off)" if value is None else f"{value:g}"


class _Count(_Kind):
    """A whole number with a lower bound, or 'auto' (None: sqlsandbox chooses) if allowed."""

    metavar = "N"

    def __init__(self, minimum: int, *, auto: bool = True) -> None:
        self.minimum = minimum
        self.auto = auto
        self.doc = f"a whole number >= {minimum}" + (", or 'auto'" if auto else "")

    def from_file(self, value: object) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return self._check(value)
        return super().from_file(value)  # type: ignore[no-any-return]

    def from_text(self, text: str) -> int | None:
        word = text.strip().lower()
        if word == "auto" and self.auto:
            return None
        try:
            return self._check(int(word))
        except ValueError:
            raise _BadValue(self.doc) from None

    def _check(self, value: int) -> int:
        if value < self.minimum:
            raise _BadValue(self.doc)
        return value

    def render(self, value: Any) -> str:
        return '"auto"' if value is None else str(value)


class _List(_Kind):
    """A list of strings: a TOML array, or comma-separated text."""

    metavar = "A,B,..."

    def __init__(self, items: str, pattern: re.Pattern[str] | None = None, one: str = "") -> None:
        self.one = one
        self.pattern = pattern
        self.doc = f"a list of {items} (env and flags: comma-separated)"

    def from_file(self, value: object) -> tuple[str, ...]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return self._check([v.strip() for v in value if v.strip()])
        raise _BadValue(self.doc)

    def from_text(self, text: str) -> tuple[str, ...]:
        return self._check([part.strip() for part in text.split(",") if part.strip()])

    def _check(self, items: list[str]) -> tuple[str, ...]:
        if self.pattern is not None:
            for item in items:
                if not self.pattern.match(item):
                    raise _BadValue(f"{self.doc}; {item!r} is not {self.one}")
        return tuple(items)

    def render(self, value: Any) -> str:
        return json.dumps(list(value))


class _UrlEnv(_Kind):
    """Env var names (list form) or env var -> template (mapping form).

    Both forms become one mapping; the list form maps each name to ``"{url}"``.
    """

    metavar = "NAMES|NAME=TEMPLATE,..."
    doc = (
        "a list of env var names, or a table of env var name -> template using "
        + ", ".join("{" + f + "}" for f in URL_ENV_FIELDS)
        + " (env and flags: 'A,B' or 'A={url},B={host}', or JSON)"
    )

    def from_file(self, value: object) -> Mapping[str, str]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return self._check({name.strip(): "{url}" for name in value})
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return self._check({str(k).strip(): v for k, v in value.items()})
        return super().from_file(value)  # type: ignore[no-any-return]

    def from_text(self, text: str) -> Mapping[str, str]:
        text = text.strip()
        if text[:1] in {"[", "{"}:
            try:
                decoded = json.loads(text)
            except ValueError:
                raise _BadValue(self.doc) from None
            return self.from_file(decoded)
        mapping: dict[str, str] = {}
        for part in (p.strip() for p in text.split(",")):
            if part:
                name, sep, template = part.partition("=")
                mapping[name.strip()] = template if sep else "{url}"
        return self._check(mapping)

    def _check(self, mapping: dict[str, str]) -> Mapping[str, str]:
        for name, template in mapping.items():
            if not _ENV_NAME_RE.match(name):
                raise _BadValue(f"{self.doc}; {name!r} is not an env var name")
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
            except ValueError as exc:
                raise _BadValue(f"{self.doc}; template of {name} is malformed: {exc}") from None
            for field in fields:
                if field not in URL_ENV_FIELDS:
                    raise _BadValue(
                        f"{self.doc}; template of {name} uses unknown placeholder {{{field}}}"
                    )
        return MappingProxyType(mapping)

    def render(self, value: Any) -> str:
        if all(t == "{url}" for t in value.values()):
            return json.dumps(list(value))
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"


_IMPORT_TARGET = _Text("'package.module:attribute'", IMPORT_TARGET_RE)
_MIGRATE = _Text(
    "'alembic', 'alembic:path/to/alembic.ini', 'package.module:function', "
    "'sql:path/to/dir/' or 'metadata:package.module:Base.metadata'",
    re.compile(
        r"^(alembic(:.+)?|sql:.+|metadata:[A-Za-z_][\w.]*:[A-Za-z_][\w.]*"
        r"|[A-Za-z_][\w.]*:[A-Za-z_][\w.]*)$"
    ),
)


# -- the table ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Key:
    """One setting: its name, kind, default and help, and the names derived from it."""

    name: str
    kind: _Kind
    default: Any
    help: str
    example: str

    @property
    def env(self) -> str:
        """The env var: ``SQLSANDBOX_OWNERSHIP_TIMEOUT``."""
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        """The command-line flag: ``--sqlsandbox-ownership-timeout``."""
        return FLAG_PREFIX + self.name.replace("_", "-")

    @property
    def choices(self) -> tuple[str, ...]:
        """The allowed values of a key with a fixed set of them, else ()."""
        return self.kind.choices if isinstance(self.kind, _Choice) else ()

    @property
    def negative_flag(self) -> str | None:
        """The flag that switches an on/off key off, or None."""
        if not isinstance(self.kind, _Bool):
            return None
        # no_sleep is switched off by --sqlsandbox-sleep, not --sqlsandbox-no-no-sleep.
        name = self.name.removeprefix("no_") if self.name.startswith("no_") else "no_" + self.name
        return FLAG_PREFIX + name.replace("_", "-")

    @property
    def dest(self) -> str:
        """Attribute name of the parsed flag on the options namespace."""
        return "sqlsandbox_" + self.name


def _key(kind: _Kind, default: Any, help: str, example: str) -> Any:
    meta = {"sqlsandbox": (kind, default, help, example)}
    if isinstance(default, Mapping):
        frozen = MappingProxyType(dict(default))
        return dataclasses.field(default_factory=lambda: frozen, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything sqlsandbox reads from configuration, validated.

    Build it with :func:`load_settings`; in pytest use
    ``sqlsandbox.pytest_plugin.get_settings(config)``.
    """

    url: str | None = _key(
        _Text(
            "a database server URL ('postgresql://...', 'mysql://...', 'sqlite:///dir', 'sqlite')",
            re.compile(r"^(sqlite(\+\w+)?|[A-Za-z][\w+.-]*://.*)$"),
        ),
        None,
        "Server where sqlsandbox creates its databases; not set: an embedded PostgreSQL.",
        'url = "postgresql://postgres@127.0.0.1:5432/postgres"',
    )
    migrate: str | None = _key(
        _MIGRATE,
        None,
        "How the template database is built from your migrations.",
        'migrate = "alembic"',
    )
    seed: str | None = _key(
        _IMPORT_TARGET,
        None,
        "Callable (sync or async, receives the template URL) that loads sample data "
        "into the template after the migrations.",
        'seed = "myapp.testing:load_sample_data"',
    )
    fingerprint_extra: tuple[str, ...] = _key(
        _List("glob patterns"),
        (),
        "More files whose contents shape the template (globs relative to the rootdir); "
        "a change rebuilds it.",
        'fingerprint_extra = ["myapp/models/*.py", "sql/functions/*.sql"]',
    )
    setup: str = _key(
        _Choice("auto", "empty", "schema", "schema+data"),
        "auto",
        "What the template holds: nothing, the migrated schema, or the schema and the seed "
        "data; 'auto' is 'schema+data' with a seed, 'schema' with migrate, else 'empty'.",
        'setup = "schema"',
    )
    alembic_config: str | None = _key(
        _Text("a path to alembic.ini or pyproject.toml, relative to the rootdir"),
        None,
        "Alembic configuration file for migrate = 'alembic'; not set: alembic.ini in the "
        "rootdir, else [tool.alembic] in pyproject.toml.",
        'alembic_config = "db/alembic.ini"',
    )
    url_env: Mapping[str, str] = _key(
        _UrlEnv(),
        {},
        "Env vars set to this worker's database before your conftest.py and app are imported. "
        "A list keeps the driver and options each variable had; a table renders a template.",
        'url_env = ["DATABASE_URL", "ASYNC_DATABASE_URL"]',
    )
    engines: tuple[str, ...] = _key(
        _List(
            "import targets 'package.module:attribute'",
            IMPORT_TARGET_RE,
            "an import target 'package.module:attribute'",
        ),
        (),
        "SQLAlchemy engines (sync or async) of your app to route through the sandbox.",
        'engines = ["myapp.db:engine"]',
    )
    drivers: tuple[str, ...] = _key(
        _List(
            "driver names: " + ", ".join(repr(d) for d in DRIVERS),
            re.compile("^(" + "|".join(DRIVERS) + ")$"),
            "one of " + ", ".join(repr(d) for d in DRIVERS),
        ),
        (),
        "Drivers your app calls directly (asyncpg.connect/create_pool, psycopg.connect and "
        "psycopg_pool, sqlite3/aiosqlite.connect, pymysql/aiomysql.connect) to route through "
        "the sandbox, as sqlsandbox.<driver>.install() does; psycopg covers its asyncio and "
        "pool APIs, sqlite covers aiosqlite, mysql covers PyMySQL and aiomysql.",
        'drivers = ["asyncpg"]',
    )
    isolation: str = _key(
        _Choice("transaction", "database", "none"),
        "transaction",
        "Default isolation of a test: rolled-back transaction, fresh clone, or none.",
        'isolation = "transaction"',
    )
    mode: str = _key(
        _Choice("manual", "auto", "shared"),
        "manual",
        "Default ownership mode: unowned access fails (manual), gets its own connection "
        "(auto), or uses the test's connection (shared).",
        'mode = "manual"',
    )
    ownership_timeout: float | None = _key(
        _Seconds(),
        120.0,
        "Seconds a test may hold its sandboxed connection before losing it.",
        "ownership_timeout = 300",
    )
    warm_pool: int | None = _key(
        _Count(0),
        None,
        "Clones kept ready for isolation='database' tests; 'auto' adapts to demand, 0 disables.",
        "warm_pool = 4",
    )
    max_databases: int | None = _key(
        _Count(1),
        None,
        "Most databases this run may hold on the server at once, the template included "
        "(clones of every worker and the warm pool); 'auto' allows 10 per worker.",
        "max_databases = 20",
    )
    reserve_connections: int = _key(
        _Count(0, auto=False),
        5,
        "Server connections left free for everything else; the run is refused up front "
        "when its workers would not fit in the rest of max_connections.",
        "reserve_connections = 10",
    )
    connections_per_worker: int = _key(
        _Count(1, auto=False),
        4,
        "Connections your app opens per xdist worker (its pool size), counted against the "
        "server's max_connections before the run starts.",
        "connections_per_worker = 10",
    )
    lock_timeout: float | None = _key(
        _Seconds(),
        600.0,
        "Seconds to wait for another process (or machine) building the same template; "
        "0 waits for ever.",
        "lock_timeout = 120",
    )
    registry_database: str = _key(
        _Text(
            "a database name starting with 'sqlsandbox_'",
            re.compile(r"^sqlsandbox_[a-z0-9_]{1,50}$"),
        ),
        "sqlsandbox_registry",
        "Database (SQLite: file) on the server where sqlsandbox records the databases it "
        "made; runs with different registries never reuse or reap each other's.",
        'registry_database = "sqlsandbox_registry_team_a"',
    )
    keep_server: bool = _key(
        _Bool(),
        False,
        "Keep the embedded PostgreSQL running after the run, for a faster next start.",
        "keep_server = true",
    )
    reset_sequences: bool = _key(
        _Bool(),
        True,
        "Restore sequences a test advanced, so every test's first insert gets the same id.",
        "reset_sequences = false",
    )
    virtual_time: bool = _key(
        _Bool(),
        False,
        "Run every async test on virtual time (sleeps return at once, in timer order).",
        "virtual_time = true",
    )
    leaks: str = _key(
        _Choice("fail", "cancel", "warn", "off"),
        "cancel",
        "What to do with tasks, threads and connections a test leaves behind.",
        'leaks = "fail"',
    )
    leak_allowlist: tuple[str, ...] = _key(
        _List("task names or coroutine names"),
        (),
        "Leftover tasks that are not leaks (by task name or coroutine qualified name).",
        'leak_allowlist = ["heartbeat", "myapp.metrics:flush_forever"]',
    )
    timeout: float | None = _key(
        _Seconds(),
        60.0,
        "Per-test timeout in seconds; on expiry the test fails with every task's await chain.",
        "timeout = 30",
    )
    no_sleep: bool = _key(
        _Bool(),
        False,
        "Fail tests that call time.sleep or a real-time asyncio.sleep.",
        "no_sleep = true",
    )
    summary: bool = _key(
        _Bool(),
        True,
        "Print the sqlsandbox block (server, template, clones, isolation) after the run.",
        "summary = false",
    )
    #: Where each value came from: ``"default"``, ``"file PATH"``,
    #: ``"env SQLSANDBOX_X"`` or ``"flag --sqlsandbox-x"``; not a setting.
    origins: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )

    def origin(self, name: str) -> str:
        """Say where the value of key *name* came from."""
        return self.origins.get(name, "default")


KEYS: Final[tuple[Key, ...]] = tuple(
    Key(f.name, *f.metadata["sqlsandbox"])
    for f in dataclasses.fields(Settings)
    if "sqlsandbox" in f.metadata
)
_BY_NAME: Final = {key.name: key for key in KEYS}


def setting_key(name: str) -> Key:
    """Return the declaration of setting *name*."""
    return _BY_NAME[name]


# -- loading -----------------------------------------------------------------


def _error(key: Key, source: str, value: object, allowed: str) -> ConfigError:
    if isinstance(value, str):
        # mask_url only knows well-formed URLs; also hide "user:secret@" in broken ones.
        shown = repr(_CREDENTIALS_RE.sub(":***@", mask_url(value)))
    else:
        shown = repr(value)
    return ConfigError(
        f"Invalid value for setting {key.name!r} from {source}: {shown}. "
        f"Allowed: {allowed}. Change it in {source} (see docs/configuration.md)."
    )


def _read_file(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}. Fix the file's TOML syntax.") from None
    table = document.get("tool", {}).get("sqlsandbox", {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"[tool.sqlsandbox] in {path} must be a table, not {type(table).__name__}."
        )
    return table


def load_settings(
    rootdir: Path,
    env: Mapping[str, str],
    flags: Mapping[str, object] | None = None,
) -> Settings:
    """Build the settings from ``rootdir/pyproject.toml``, *env* and *flags*.

    *flags* maps key names to values given on the command line: text is
    parsed like an env var, anything else like a TOML value; None means not
    given. Raise ConfigError naming the key, the source, the value and what
    is allowed.
    """
    pyproject = Path(rootdir) / "pyproject.toml"
    file_source = f"[tool.sqlsandbox] of {pyproject}"
    values: dict[str, object] = {}
    origins: dict[str, str] = {}

    for raw_name, value in _read_file(pyproject).items():
        name = raw_name.replace("-", "_")
        key = _BY_NAME.get(name)
        if key is None:
            close = difflib.get_close_matches(name, _BY_NAME, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"Unknown setting {raw_name!r} in {file_source}{hint}. "
                f"Known keys: {', '.join(_BY_NAME)}."
            )
        try:
            values[name] = key.kind.from_file(value)
        except _BadValue as exc:
            raise _error(key, file_source, value, str(exc)) from None
        origins[name] = f"file {pyproject}"

    for key in KEYS:
        text = env.get(key.env, "")
        if text.strip():
            try:
                values[key.name] = key.kind.from_text(text)
            except _BadValue as exc:
                raise _error(key, f"env {key.env}", text, str(exc)) from None
            origins[key.name] = f"env {key.env}"

    for name, value in (flags or {}).items():
        if value is None:
            continue
        key = _BY_NAME.get(name)
        if key is None:
            raise ConfigError(
                f"Unknown setting {name!r} given as a flag. Known keys: {', '.join(_BY_NAME)}."
            )
        try:
            parsed = (
                key.kind.from_text(value) if isinstance(value, str) else key.kind.from_file(value)
            )
        except _BadValue as exc:
            raise _error(key, f"flag {key.flag}", value, str(exc)) from None
        values[name] = parsed
        origins[name] = f"flag {key.flag}"

    return Settings(**values, origins=MappingProxyType(origins))  # type: ignore[arg-type]


# -- docs --------------------------------------------------------------------

_BEGIN = "<!-- BEGIN GENERATED: settings reference (python -m sqlsandbox._settings) -->"
_END = "<!-- END GENERATED -->"


def _default(key: Key) -> str:
    shown = key.kind.render(key.default)
    return f"`{shown}`" if shown else "not set"


def reference_markdown() -> str:
    """Render the reference of every key, for docs/configuration.md."""
    lines = [
        _BEGIN,
        "",
        "| key | type | default | flag | env var |",
        "|---|---|---|---|---|",
    ]
    for key in KEYS:
        flag = f"`{key.flag}`" + (f" / `{key.negative_flag}`" if key.negative_flag else "")
        lines.append(
            f"| [`{key.name}`](#{key.name}) | {key.kind.doc} "
            f"| {_default(key)} | {flag} | `{key.env}` |"
        )
    for key in KEYS:
        flag_use = key.flag if key.kind.metavar is None else f"{key.flag}={key.kind.metavar}"
        if key.negative_flag:
            flag_use += f"`, `{key.negative_flag}"
        lines += [
            "",
            f"### {key.name}",
            "",
            key.help,
            "",
            f"- type: {key.kind.doc}",
            f"- default: {_default(key)}",
            f"- flag: `{flag_use}`",
            f"- env var: `{key.env}`",
            "",
            "```toml",
            "[tool.sqlsandbox]",
            key.example,
            "```",
        ]
    lines += ["", _END]
    return "\n".join(lines) + "\n"


def replace_reference(document: str) -> str:
    """Return *document* with its generated block replaced by the current reference."""
    head, sep, rest = document.partition(_BEGIN)
    _, sep2, tail = rest.partition(_END + "\n")
    if not sep or not sep2:
        raise ValueError(f"markers {_BEGIN!r} ... {_END!r} not found")
    return head + reference_markdown() + tail


if __name__ == "__main__":
    # Regenerate the reference block in the given markdown files.
    for name in sys.argv[1:]:
        target = Path(name)
        target.write_text(replace_reference(target.read_text()))
