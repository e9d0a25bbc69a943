"""What a template is made of: the ``migrate``, ``seed`` and ``setup`` settings."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Literal

from .._exceptions import ConfigError

__all__ = ["SETUP_MODES", "SetupMode", "TemplateSpec"]

SetupMode = Literal["empty", "schema", "schema+data"]
SETUP_MODES: tuple[SetupMode, ...] = ("empty", "schema", "schema+data")


@dataclasses.dataclass(frozen=True)
class TemplateSpec:
    """Everything that shapes one template, as the user configured it.

    ``migrate`` is one of ``"alembic"``, ``"pkg.module:function"``,
    ``"sql:path/"`` or ``"metadata:pkg.module:Base.metadata"`` (None: an empty
    template). ``seed`` names a ``"pkg.module:function"`` that fills sample
    data. ``setup`` picks what the template holds: ``"empty"``, ``"schema"``
    (migrations only) or ``"schema+data"`` (migrations and seed); by default
    ``"schema+data"`` when a seed is given, else ``"schema"`` (``"empty"``
    without ``migrate``).
    """

    migrate: str | None = None
    seed: str | None = None
    setup: SetupMode | None = None
    #: Project root: relative paths (SQL folder, alembic.ini, extras) start here.
    root: Path = dataclasses.field(default_factory=Path.cwd)
    #: alembic.ini or pyproject.toml to read (default: ``root/alembic.ini``, then pyproject).
    alembic_config: str | None = None
    #: Extra globs (relative to root) whose files are part of the fingerprint.
    fingerprint_extra: tuple[str, ...] = ()
    #: Environment variables pointed at the template while it is built.
    url_env: tuple[str, ...] = ()
    #: URL scheme handed to migration and seed callables (default: the server URL's).
    scheme: str | None = None
    #: Name of this line of templates; older ones of the same project are pruned.
    project: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())
        object.__setattr__(self, "fingerprint_extra", tuple(self.fingerprint_extra))
        object.__setattr__(self, "url_env", tuple(self.url_env))
        if self.setup is not None and self.setup not in SETUP_MODES:
            raise ConfigError(
                f"Invalid setup mode {self.setup!r}: use one of {', '.join(SETUP_MODES)} "
                "(--sqlsandbox-setup, SQLSANDBOX_SETUP or [tool.sqlsandbox] setup)."
            )
        mode = self.mode
        if mode == "schema+data" and not self.seed:
            raise ConfigError(
                "Setup mode 'schema+data' needs a seed callable: set seed = "
                "'pkg.module:function' (--sqlsandbox-seed, SQLSANDBOX_SEED or "
                "[tool.sqlsandbox] seed), or use setup = 'schema'."
            )

    @property
    def mode(self) -> SetupMode:
        """Return the effective setup mode."""
        if self.setup is not None:
            return self.setup
        if self.seed:
            return "schema+data"
        return "schema" if self.migrate else "empty"

    @property
    def runs_migrations(self) -> bool:
        """Return whether building the template runs ``migrate``."""
        return bool(self.migrate) and self.mode != "empty"

    @property
    def runs_seed(self) -> bool:
        """Return whether building the template runs ``seed``."""
        return bool(self.seed) and self.mode == "schema+data"

    @property
    def project_key(self) -> str:
        """Return a short key naming this line of templates (same project, same sources)."""
        label = self.project or self.root.name
        raw = "\0".join([label, self.migrate or "", self.seed or "", self.mode])
        return f"{label}:{hashlib.sha256(raw.encode()).hexdigest()[:8]}"

    def describe(self) -> str:
        """Return a one-line description for messages: ``alembic + seed app.seed:run``."""
        parts = []
        if self.runs_migrations:
            parts.append(str(self.migrate))
        if self.runs_seed:
            parts.append(f"seed {self.seed}")
        return " + ".join(parts) or "empty"
