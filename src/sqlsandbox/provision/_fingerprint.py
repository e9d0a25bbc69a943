"""Fingerprints: one hash of everything that shapes a template.

Same fingerprint, same template: a later run reuses it without running a
single migration. The parts are kept too, so ``templates ls`` can say which
input changed.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from .._exceptions import ConfigError
from .._version import __version__
from ._names import SHORT_FINGERPRINT_LENGTH
from ._sources import CallableSource, MigrationSource, parse_source

if TYPE_CHECKING:
    from ._spec import TemplateSpec

__all__ = ["Fingerprint", "compute_fingerprint", "migration_source", "seed_source"]

# Bump when the way templates are built changes incompatibly (for example
# the sequence repair), so old templates are rebuilt. 2: PostgreSQL templates
# carry a relation cache init file (see TemplateBuilder._finish).
_BUILD_FORMAT = "2"


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """The hash of a template's inputs, with a digest of each part."""

    value: str
    parts: tuple[tuple[str, str], ...]

    @property
    def short(self) -> str:
        """Return the prefix used in database names."""
        return self.value[:SHORT_FINGERPRINT_LENGTH]

    def __str__(self) -> str:
        return self.short


def migration_source(spec: TemplateSpec, backend: str) -> MigrationSource | None:
    """Return the source of the template's schema, or None if it runs no migrations."""
    if not spec.runs_migrations or spec.migrate is None:
        return None
    return parse_source(spec.migrate, spec, backend=backend)


def seed_source(spec: TemplateSpec) -> CallableSource | None:
    """Return the seed callable of the template, or None."""
    if not spec.runs_seed or spec.seed is None:
        return None
    return CallableSource(spec.seed, root=spec.root, step="seed")


def _extra_files(spec: TemplateSpec) -> list[Path]:
    found: set[Path] = set()
    for pattern in spec.fingerprint_extra:
        matches = glob.glob(pattern, root_dir=spec.root, recursive=True)
        if not matches:
            raise ConfigError(
                f"fingerprint_extra pattern {pattern!r} matches no file under {spec.root}: "
                "fix or remove it (--sqlsandbox-fingerprint-extra, [tool.sqlsandbox] "
                "fingerprint_extra)."
            )
        for match in matches:
            path = spec.root / match
            if path.is_file():
                found.add(path)
            elif path.is_dir():
                found.update(p for p in path.rglob("*") if p.is_file())
    return sorted(found)


def compute_fingerprint(spec: TemplateSpec, *, backend: str, server_version: str) -> Fingerprint:
    """Hash the inputs of *spec* for a server of *backend* at *server_version*."""
    parts: list[tuple[str, str]] = []

    def add(name: str, content: bytes) -> None:
        parts.append((name, hashlib.sha256(content).hexdigest()))

    add("format", _BUILD_FORMAT.encode())
    add("sqlsandbox", __version__.encode())
    add("server", f"{backend} {server_version}".encode())
    add("setup", spec.mode.encode())
    source = migration_source(spec, backend)
    if source is not None:
        add("migrate", (spec.migrate or "").encode())
        for name, content in source.inputs():
            add(name, content)
    seed = seed_source(spec)
    if seed is not None:
        for name, content in seed.inputs():
            add(name, content)
    for path in _extra_files(spec):
        add(f"extra:{path.relative_to(spec.root).as_posix()}", path.read_bytes())
    total = hashlib.sha256()
    for name, digest in parts:
        total.update(f"{name}\0{digest}\n".encode())
    return Fingerprint(total.hexdigest(), tuple(parts))
