"""Names of the databases sqlsandbox creates: ``sqlsandbox_<fingerprint>_<kind>_<id>``.

The name alone tells a human what a database is (which template generation,
what it is used for); the registry tells sqlsandbox who owns it. Both are
required before anything is dropped.
"""

from __future__ import annotations

import dataclasses
import re
import uuid

from .._exceptions import ConfigError
from ..servers._base import DATABASE_PREFIX

__all__ = [
    "REGISTRY_DATABASE",
    "SHORT_FINGERPRINT_LENGTH",
    "TEMPLATE_KIND",
    "ParsedName",
    "check_kind",
    "make_name",
    "parse_name",
]

#: The database that holds the registry (PostgreSQL, MariaDB) or its file (SQLite).
REGISTRY_DATABASE = f"{DATABASE_PREFIX}registry"
#: Kind of a template database.
TEMPLATE_KIND = "tpl"
#: Hex digits of the fingerprint kept in names (48 bits: collisions are not a concern).
SHORT_FINGERPRINT_LENGTH = 12

_KIND_RE = re.compile(r"^[a-z]{1,10}$")
_NAME_RE = re.compile(
    rf"^{DATABASE_PREFIX}(?P<fingerprint>[0-9a-f]{{{SHORT_FINGERPRINT_LENGTH}}})"
    r"_(?P<kind>[a-z]{1,10})_(?P<id>[0-9a-f]{12})$"
)


@dataclasses.dataclass(frozen=True)
class ParsedName:
    """The parts of a generated database name."""

    fingerprint: str
    kind: str
    id: str


def check_kind(kind: str) -> str:
    """Return *kind* if it can appear in a database name, else raise ConfigError."""
    if not _KIND_RE.match(kind) or kind == TEMPLATE_KIND:
        raise ConfigError(
            f"Invalid clone kind {kind!r}: use 1 to 10 lower-case letters other than "
            f"{TEMPLATE_KIND!r}, for example 'worker', 'module' or 'test'."
        )
    return kind


def make_name(fingerprint: str, kind: str) -> str:
    """Return a new, unique database name for *kind* of the template *fingerprint*."""
    short = fingerprint[:SHORT_FINGERPRINT_LENGTH]
    return f"{DATABASE_PREFIX}{short}_{kind}_{uuid.uuid4().hex[:12]}"


def parse_name(name: str) -> ParsedName | None:
    """Return the parts of a name sqlsandbox generated, or None for any other name."""
    found = _NAME_RE.match(name)
    if found is None:
        return None
    return ParsedName(found["fingerprint"], found["kind"], found["id"])
