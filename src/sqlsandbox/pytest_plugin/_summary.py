"""The run summary: a recorder the other parts feed, and the block printed at the end.

Each process records into its own :class:`RunRecorder`; xdist workers send
theirs to the controller in ``workeroutput``, where they are merged, so the
block covers the whole run whatever ``-n`` is.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from typing import Any

import pytest

from .._urls import DatabaseURL, mask_url
from ._options import get_settings
from ._xdist import is_worker

__all__ = ["RunRecorder", "TemplateRecord", "get_recorder"]

_RECORDER_KEY = pytest.StashKey["RunRecorder"]()
_WORKEROUTPUT_KEY = "sqlsandbox_summary"


@dataclasses.dataclass
class TemplateRecord:
    """One template the run used: built now (and how long it took) or reused."""

    fingerprint: str
    reused: bool
    seconds: float = 0.0


@dataclasses.dataclass
class RunRecorder:
    """What sqlsandbox did during a run; other parts of the plugin call ``record_*``.

    Thread-safe: the warm pool records from its background thread.
    """

    server: str | None = None
    server_version: str | None = None
    templates: dict[str, TemplateRecord] = dataclasses.field(default_factory=dict)
    clones: int = 0
    tests: Counter[str] = dataclasses.field(default_factory=Counter)
    warm_acquires: int = 0
    warm_waits: int = 0
    warm_wait_seconds: float = 0.0
    _lock: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, repr=False, compare=False
    )

    # -- recording ---------------------------------------------------------

    def record_server(self, url: str | DatabaseURL, version: str | None = None) -> None:
        """Note the server in use; the URL is stored masked."""
        with self._lock:
            self.server = mask_url(url)
            self.server_version = version or self.server_version

    def record_template(self, fingerprint: str, *, reused: bool, seconds: float = 0.0) -> None:
        """Note a template: *reused* from an earlier run, or built in *seconds*."""
        with self._lock:
            known = self.templates.get(fingerprint)
            if known is None or (known.reused and not reused):
                self.templates[fingerprint] = TemplateRecord(fingerprint, reused, seconds)

    def record_clone(self, count: int = 1) -> None:
        """Note clones taken from a template (per worker or per test)."""
        with self._lock:
            self.clones += count

    def record_test(self, isolation: str) -> None:
        """Note one test that used the database under *isolation*."""
        with self._lock:
            self.tests[isolation] += 1

    def record_warm_acquire(self, waited_seconds: float = 0.0) -> None:
        """Note one clone taken from the warm pool, and how long the test waited for it."""
        with self._lock:
            self.warm_acquires += 1
            if waited_seconds > 0:
                self.warm_waits += 1
                self.warm_wait_seconds += waited_seconds

    # -- transport ---------------------------------------------------------

    @property
    def empty(self) -> bool:
        """Return True if nothing was recorded (the run never used a database)."""
        return not (self.server or self.templates or self.clones or self.tests)

    def to_dict(self) -> dict[str, Any]:
        """Return plain data that execnet can carry to the controller."""
        with self._lock:
            return {
                "server": self.server,
                "server_version": self.server_version,
                "templates": [dataclasses.astuple(t) for t in self.templates.values()],
                "clones": self.clones,
                "tests": dict(self.tests),
                "warm_acquires": self.warm_acquires,
                "warm_waits": self.warm_waits,
                "warm_wait_seconds": self.warm_wait_seconds,
            }

    def merge(self, data: dict[str, Any]) -> None:
        """Add what another process recorded (see :meth:`to_dict`)."""
        if data.get("server"):
            self.record_server(data["server"], data.get("server_version"))
        for fingerprint, reused, seconds in data.get("templates", ()):
            self.record_template(fingerprint, reused=reused, seconds=seconds)
        with self._lock:
            self.clones += data.get("clones", 0)
            self.tests.update(data.get("tests", {}))
            self.warm_acquires += data.get("warm_acquires", 0)
            self.warm_waits += data.get("warm_waits", 0)
            self.warm_wait_seconds += data.get("warm_wait_seconds", 0.0)

    # -- rendering ---------------------------------------------------------

    def render(self) -> list[str]:
        """Return the lines of the summary block."""
        lines: list[str] = []
        if self.server:
            version = f", version {self.server_version}" if self.server_version else ""
            lines.append(f"server     {self.server}{version}")
        for record in self.templates.values():
            how = "reused" if record.reused else f"built in {record.seconds:.2f} s"
            lines.append(f"template   {record.fingerprint}  {how}")
        lines.append(f"clones     {self.clones}")
        counts = ", ".join(
            f"{isolation} {self.tests[isolation]}"
            for isolation in ("transaction", "database", "none")
            if self.tests[isolation]
        )
        lines.append(f"tests      {counts or 'none used the database'}")
        if self.warm_acquires:
            waits = f"{self.warm_waits} waited"
            if self.warm_waits:
                waits += f", {self.warm_wait_seconds * 1000:.0f} ms in all"
            lines.append(f"warm pool  {self.warm_acquires} taken, {waits}")
        return lines


def get_recorder(config: pytest.Config) -> RunRecorder:
    """Return the recorder of this process's run."""
    recorder = config.stash.get(_RECORDER_KEY, None)
    if recorder is None:
        recorder = config.stash[_RECORDER_KEY] = RunRecorder()
    return recorder


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Hand a worker's numbers to xdist, after session fixtures were torn down."""
    config = session.config
    workeroutput: dict[str, Any] | None = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_WORKEROUTPUT_KEY] = get_recorder(config).to_dict()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Merge a finished worker's numbers into the controller's recorder."""
    data = getattr(node, "workeroutput", {}).get(_WORKEROUTPUT_KEY)
    if data:
        get_recorder(node.config).merge(data)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print the sqlsandbox block, once per run, when a database was used."""
    if is_worker(config) or not get_settings(config).summary:
        return
    recorder = get_recorder(config)
    if recorder.empty:
        return
    terminalreporter.write_sep("-", "sqlsandbox")
    for line in recorder.render():
        terminalreporter.write_line(line)
