"""Running a template's migrations and seed: in a thread here, or in a child process.

Building imports the project's code: Alembic's ``env.py``, the migration and
seed callables, and whatever they import, which is often the app itself.
In a test run that leaves traces the tests then trip over: settings read
from ``DATABASE_URL`` while it named the template, engines built on it,
variables the app sets at import, loggers. A child process (:func:`child_main`)
keeps all of that out of the run; the pytest plugin builds this way. The
child gets the parent's ``sys.path`` and environment, reports progress as
JSON lines on its standard output, and exits when the parent goes away (its
standard input closes).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .. import _exceptions
from .._exceptions import ProvisioningError, SandboxError
from .._urls import DatabaseURL
from ..servers._errors import scrub, scrub_urls
from ._fingerprint import migration_source, seed_source
from ._sources import BuildContext, ChildError, StepFailed, describe_error
from ._spec import TemplateSpec

__all__ = ["apply_sources", "child_main", "run_in_child", "run_in_thread"]

#: Lines of the child's standard error kept for the message if it dies.
_STDERR_TAIL = 20
#: What the child runs: sqlsandbox from where this process has it, then the parent's path.
_CHILD_CODE = (
    "import sys; sys.path.insert(0, {where!r}); "
    "from sqlsandbox.provision._build import child_main; sys.exit(child_main())"
)


def apply_sources(spec: TemplateSpec, ctx: BuildContext, backend: str) -> None:
    """Run the migrations, then the seed, of *spec* into ``ctx.url``."""
    source = migration_source(spec, backend)
    seed = seed_source(spec)
    with _pointed_env(spec.url_env, ctx.url):
        if source is not None:
            source.run(ctx)
        if seed is not None:
            seed.run(ctx)


@contextlib.contextmanager
def _pointed_env(names: tuple[str, ...], url: DatabaseURL) -> Iterator[None]:
    """Point the environment variables *names* at *url* for the block.

    A variable that already holds a URL keeps its scheme (its driver), so an
    app or env.py reading ``DATABASE_URL`` gets the driver it expects.
    """
    saved = {name: os.environ.get(name) for name in names}
    for name, old in saved.items():
        scheme = None
        if old and "://" in old:
            scheme = old.split("://", 1)[0]
        os.environ[name] = (url.with_scheme(scheme) if scheme else url).render()
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def run_in_thread(fn: Callable[[], None]) -> None:
    """Run *fn* in a fresh thread (no event loop of the caller's) and re-raise its error."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="sqlsandbox-template-build", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


# -- the parent's side -----------------------------------------------------------


def run_in_child(spec: TemplateSpec, ctx: BuildContext, backend: str) -> None:
    """Do what :func:`apply_sources` does, in a child process; re-raise its failure here.

    A failing step comes back as :class:`StepFailed` around a
    :class:`ChildError` (the child's error, described, with its traceback as
    a note); a :class:`SandboxError` as the same class with the same message.
    """
    payload = {
        "spec": {
            "migrate": spec.migrate,
            "seed": spec.seed,
            "setup": spec.setup,
            "root": str(spec.root),
            "alembic_config": spec.alembic_config,
            "fingerprint_extra": list(spec.fingerprint_extra),
            "url_env": list(spec.url_env),
            "scheme": spec.scheme,
            "project": spec.project,
        },
        "url": ctx.url.render(),
        "database": ctx.database,
        "backend": backend,
        "sys_path": [entry for entry in sys.path if isinstance(entry, str)],
    }
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_CODE.format(where=str(Path(__file__).parents[2]))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    tail: deque[str] = deque(maxlen=_STDERR_TAIL)
    drain = threading.Thread(
        target=_drain, args=(child.stderr, tail), name="sqlsandbox-build-stderr", daemon=True
    )
    drain.start()
    outcome: dict[str, Any] | None = None
    try:
        # The URL (and its password) goes through the pipe, never the command line.
        child.stdin.write(json.dumps(payload) + "\n")
        child.stdin.flush()
        for line in child.stdout:
            message = json.loads(line)
            if "report" in message:
                ctx.report(str(message["report"]))
            else:
                outcome = message
                break
    finally:
        # Closing stdin tells the child to exit, if it has not already.
        with contextlib.suppress(OSError):
            child.stdin.close()
        if outcome is None:
            child.kill()
        code = child.wait()
        drain.join()
        child.stdout.close()
        child.stderr.close()
    _raise_outcome(outcome, code, list(tail), ctx.url)


def _drain(stream: IO[str], tail: deque[str]) -> None:
    for line in stream:
        tail.append(line.rstrip("\n"))


def _raise_outcome(
    outcome: dict[str, Any] | None, code: int, stderr: list[str], url: DatabaseURL
) -> None:
    if outcome is not None and outcome.get("done"):
        return
    if outcome is None:
        shown = scrub("\n    ".join(line for line in stderr if line.strip()), url)
        raise ProvisioningError(
            f"The process that builds the template ({sys.executable}, "
            f"sqlsandbox.provision._build) exited with code {code} before it finished"
            + (f"; the end of its output:\n    {shown}\n" if shown else ". ")
            + "Run the migrations (and seed) by hand against an empty database to see "
            "the whole error, fix it and run again."
        )
    if "sandbox_error" in outcome:
        cls = getattr(_exceptions, str(outcome["sandbox_error"]), None)
        if not (isinstance(cls, type) and issubclass(cls, SandboxError)):
            cls = ProvisioningError
        raise cls(str(outcome["message"]))
    error = ChildError(scrub(str(outcome["error"]), url))
    shown = scrub(str(outcome.get("traceback", "")), url)
    error.add_note(f"Traceback in the process that built the template:\n{shown}")
    if "step" in outcome:
        raise StepFailed(str(outcome["step"]), error)
    raise error


# -- the child's side ------------------------------------------------------------


def child_main() -> int:
    """Build as the parent's payload on stdin says; the outcome goes out as one JSON line."""
    # The pipe the parent reads is fd 1; the project's prints go to stderr instead.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    payload = json.loads(sys.stdin.readline())

    def orphaned() -> None:
        sys.stdin.read()  # returns when the parent closes the pipe (or dies)
        os._exit(3)

    threading.Thread(target=orphaned, name="sqlsandbox-build-parent", daemon=True).start()

    def send(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    sys.path[:] = payload["sys_path"]
    fields = dict(payload["spec"])
    fields["root"] = Path(fields["root"])
    fields["fingerprint_extra"] = tuple(fields["fingerprint_extra"])
    fields["url_env"] = tuple(fields["url_env"])
    try:
        spec = TemplateSpec(**fields)
        ctx = BuildContext(
            url=DatabaseURL.parse(payload["url"]),
            database=payload["database"],
            report=lambda message: send({"report": message}),
            spec=spec,
        )
        apply_sources(spec, ctx, payload["backend"])
    except StepFailed as exc:
        send(_described(exc.error) | {"step": exc.step})
    except SandboxError as exc:
        send({"sandbox_error": type(exc).__name__, "message": str(exc)})
    except BaseException as exc:
        send(_described(exc))
    else:
        send({"done": True})
    protocol.close()
    return 0


def _described(exc: BaseException) -> dict[str, str]:
    text = "".join(traceback.format_exception(exc))
    return {"error": describe_error(exc), "traceback": scrub_urls(text)}
