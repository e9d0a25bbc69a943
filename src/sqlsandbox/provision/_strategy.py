"""PostgreSQL's ``CREATE DATABASE ... STRATEGY``, chosen by measurement on the server.

``WAL_LOG`` (the default from 15) copies the template block by block through
the write-ahead log; ``FILE_COPY`` copies its files and makes the server
checkpoint. Which is cheaper depends on the server, not on us: on a server
tuned for tests (``fsync = off``, the embedded one) ``FILE_COPY`` measured
24-28 ms and 7-24 ms of server CPU per clone against 52-61 ms and 58-90 ms
for ``WAL_LOG``; on a stock server (``fsync = on``) ``WAL_LOG`` is the faster
of the two. So the first process that needs a clone on a server times a few
of each, alternately, and keeps the faster in the cache directory, keyed by
the server's identity, version and durability settings; later processes and
runs read the answer. A strategy the user set (``clone_strategy=``) is kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..servers._base import Server

__all__ = ["PROBE_ROUNDS", "STRATEGIES", "choose_clone_strategy"]

log = logging.getLogger("sqlsandbox.provision")

#: Clones timed per strategy (alternately) the first time a server is seen.
PROBE_ROUNDS = 3
#: The strategies compared, in PostgreSQL's spelling (lower case, as ``clone_strategy``).
STRATEGIES = ("wal_log", "file_copy")
_UNSET = object()


def _settings(server: Server) -> list[str]:
    """Return what the answer depends on: version, durability, and the cluster's identity.

    The identity (``pg_control_system()``, readable by anybody) survives a new
    port, as the embedded server gets at every start.
    """
    rows = server.execute(
        "SELECT current_setting('server_version_num'), current_setting('fsync'), "
        "current_setting('wal_level'), current_setting('full_page_writes')"
    )
    settings = [str(value) for value in rows[0]]
    try:
        identity = str(server.execute("SELECT system_identifier FROM pg_control_system()")[0][0])
    except Exception:  # revoked by an administrator: the address names the cluster
        identity = f"{server.url.host or 'local'}-{server.url.port or ''}"
    return [*settings, identity]


def _path(cache_dir: Path, settings: list[str]) -> Path:
    raw = "-".join(settings)
    return cache_dir / "clone-strategy" / (re.sub(r"[^A-Za-z0-9_.-]", "_", raw) + ".json")


def _read(path: Path) -> str | None:
    try:
        choice = json.loads(path.read_text()).get("strategy")
    except (OSError, ValueError, AttributeError):
        return None
    return choice if choice in STRATEGIES else None


def choose_clone_strategy(
    server: Server,
    cache_dir: Path,
    clone: Callable[[], Callable[[], None]],
    *,
    rounds: int = PROBE_ROUNDS,
) -> str | None:
    """Set ``server.clone_strategy`` to the faster strategy on *server*; return it.

    Does nothing (and returns the current value) when the server is not
    PostgreSQL 15 or later, or a strategy is set already. *clone* makes one
    clone with the server's current strategy and returns the function that
    gives it back (dropped in the background). The answer is cached under
    *cache_dir*; measuring costs ``2 * rounds`` clones, once per server.
    """
    strategy: Any = getattr(server, "clone_strategy", _UNSET)
    if strategy is not None or server.backend != "postgresql":
        return None if strategy is _UNSET else str(strategy)
    try:
        settings = _settings(server)
        if int(settings[0]) < 150000:
            return None
    except Exception as exc:  # a choice is an optimisation: never worth a failure
        log.debug("sqlsandbox: not choosing a clone strategy: %s", exc)
        return None
    path = _path(cache_dir, settings)
    choice = _read(path)
    if choice is None:
        samples: dict[str, list[float]] = {name: [] for name in STRATEGIES}
        try:
            for round_ in range(rounds):
                # Alternated, and in turn first, so that a checkpoint or another
                # process's work weighs on both alike.
                order = STRATEGIES if round_ % 2 == 0 else STRATEGIES[::-1]
                for name in order:
                    setattr(server, "clone_strategy", name)  # noqa: B010 - the base class has none
                    started = time.perf_counter()
                    give_back = clone()
                    samples[name].append(time.perf_counter() - started)
                    give_back()
        except Exception as exc:
            setattr(server, "clone_strategy", None)  # noqa: B010 - see above
            log.debug("sqlsandbox: measuring clone strategies failed: %s", exc)
            return None
        # The fastest of each: what the server needs when nothing else weighs on it
        # (a median under load from other processes follows the load).
        best = {name: min(times) for name, times in samples.items()}
        choice = min(best, key=lambda name: best[name])
        record = {
            "strategy": choice,
            "best_ms": {name: round(value * 1000, 3) for name, value in best.items()},
        }
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(record))
            os.replace(partial, path)
        log.info("sqlsandbox: clone strategy %s on %s (%s)", choice, server.url.masked(), record)
    setattr(server, "clone_strategy", choice)  # noqa: B010 - see above
    return choice
