"""Build locks: a file lock for the processes of this machine, a server lock for all machines.

The file lock comes first so that xdist workers waiting for a local build do
not each hold a server connection; the server lock (PostgreSQL advisory lock,
MariaDB ``GET_LOCK``; for SQLite a file lock in its directory) then covers
other machines and other cache directories. Both die with their process, so a
killed builder never leaves a lock behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .._exceptions import ProvisioningError

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = ["build_lock"]


def _lock_path(cache_dir: Path, registry: Registry, key: str) -> Path:
    server = registry.server.url.masked()
    digest = hashlib.sha256(f"{server}\0{key}".encode()).hexdigest()[:24]
    folder = cache_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{digest}.lock"


@contextlib.contextmanager
def build_lock(
    registry: Registry,
    cache_dir: Path,
    key: str,
    *,
    timeout: float | None,
    what: str,
) -> Iterator[bool]:
    """Hold the file lock and the server lock named *key*; yield whether both are held.

    *timeout* 0 only tries (yields False if someone else holds either lock);
    a positive *timeout* that runs out raises ProvisioningError describing
    *what* was being waited for; None waits for ever.
    """
    import filelock  # only builders and pruners get here: not imported by cached starts

    path = _lock_path(cache_dir, registry, key)
    started = time.monotonic()
    lock = filelock.FileLock(str(path), timeout=-1 if timeout is None else timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        if timeout == 0:
            yield False
            return
        raise ProvisioningError(
            f"Timed out after {timeout:g}s waiting for another process on this machine "
            f"that is {what} (lock file {path}). If that process hangs, stop it; raise "
            "the wait with --sqlsandbox-lock-timeout (SQLSANDBOX_LOCK_TIMEOUT)."
        ) from None
    try:
        remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
        if timeout == 0:
            remaining = 0
        with registry.server_lock(key, timeout=remaining) as held:
            if not held and timeout != 0:
                raise ProvisioningError(
                    f"Timed out after {timeout:g}s waiting for another machine that is "
                    f"{what} on {registry.server.url.masked()}. If that run hangs, stop it; "
                    "raise the wait with --sqlsandbox-lock-timeout (SQLSANDBOX_LOCK_TIMEOUT)."
                )
            yield held
    finally:
        lock.release()
