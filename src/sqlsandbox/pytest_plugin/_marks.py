"""The ``@pytest.mark.sandbox`` mark: registration, validation, resolution.

Arguments are validated by calling :func:`validate_sandbox`, which has the
mark's signature, so a typo fails like a bad Python call
(``sandbox() got an unexpected keyword argument 'isolaton'``).

``template=`` and ``seed=`` give a test a database of its own
(``isolation="database"``), cloned from a template built from the run's
template settings with the mark's changes: :func:`mark_template` says which.
That template is built once per fingerprint, like the run's own;
:func:`clone_for_mark` clones it, and turns a build that fails into one
failure per test that asks for it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import pytest

from .._exceptions import SandboxError
from .._settings import IMPORT_TARGET_RE, Settings, setting_key
from ._options import get_settings

if TYPE_CHECKING:
    from ..provision import Lease, Provisioner, TemplateSpec

__all__ = [
    "SandboxSpec",
    "clone_for_mark",
    "describe_mark",
    "mark_template",
    "sandbox_spec",
    "validate_sandbox",
]

_ISOLATIONS = setting_key("isolation").choices
_MODES = setting_key("mode").choices
#: What a template holds, as the ``setup`` setting names it ("auto" is not a template).
_SETUPS = tuple(s for s in setting_key("setup").choices if s != "auto")
_SPEC_KEY = pytest.StashKey["SandboxSpec"]()
#: Why the template of a mark could not be built, per template: its other tests fail at once.
_FAILED_KEY = pytest.StashKey[dict["TemplateSpec", str]]()


@dataclasses.dataclass(frozen=True)
class SandboxSpec:
    """How one test uses the database: the mark's arguments over the settings' defaults."""

    isolation: str
    mode: str
    #: A setup (``"empty"``, ``"schema"``, ``"schema+data"``) or a migrate source.
    template: str | None = None
    #: The seed as an import target (a function given to the mark is turned into one).
    seed: str | Callable[..., Any] | None = None


def validate_sandbox(
    isolation: str | None = None,
    mode: str | None = None,
    template: str | None = None,
    seed: str | Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Check the arguments of ``@pytest.mark.sandbox`` and return those given.

    Raise TypeError for a wrong argument name or type and ValueError for a
    value outside the allowed ones, like a Python call would.
    """
    given: dict[str, Any] = {}
    if isolation is not None:
        if isolation not in _ISOLATIONS:
            raise ValueError(
                f"isolation={isolation!r} is not allowed; use one of "
                + ", ".join(repr(i) for i in _ISOLATIONS)
            )
        given["isolation"] = isolation
    if mode is not None:
        if mode not in _MODES:
            raise ValueError(
                f"mode={mode!r} is not allowed; use one of " + ", ".join(repr(m) for m in _MODES)
            )
        given["mode"] = mode
    if template is not None:
        if not isinstance(template, str) or not template:
            raise TypeError(f"template must be a non-empty string, not {template!r}")
        if template not in _SETUPS and not _is_migrate_source(template):
            raise ValueError(
                f"template={template!r} is neither a setup ("
                + ", ".join(repr(s) for s in _SETUPS)
                + f") nor a migrate source ({setting_key('migrate').kind.doc})"
            )
        given["template"] = template
    if seed is not None:
        if isinstance(seed, str):
            if not IMPORT_TARGET_RE.match(seed):
                raise ValueError(
                    f"seed={seed!r} is not an import target; use 'package.module:function' "
                    "or pass the function itself"
                )
        elif not callable(seed):
            raise TypeError(f"seed must be 'package.module:function' or a callable, not {seed!r}")
        given["seed"] = seed
    return given


def _is_migrate_source(value: str) -> bool:
    try:
        setting_key("migrate").kind.from_text(value)
    except Exception:  # the setting's own check; its error type is private to _settings
        return False
    return True


def _seed_target(seed: str | Callable[..., Any]) -> str:
    """Return *seed* as ``"package.module:function"``, the form templates are built from.

    A function works when that name finds it again: the template may be built
    in another process, and its source is part of the fingerprint.
    """
    if isinstance(seed, str):
        return seed
    module = getattr(seed, "__module__", None)
    qualname = getattr(seed, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and module != "__main__":
        found: Any = sys.modules.get(module)
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if found is seed:
            return f"{module}:{qualname}"
    raise ValueError(
        f"seed={seed!r} cannot be found again by its name (a lambda, a nested function, a "
        "partial?): define it at module level, or pass 'package.module:function'"
    )


def _own_template(spec: SandboxSpec, isolation: str | None, settings: Settings) -> SandboxSpec:
    """Check a spec with ``template=`` or ``seed=``; return it with its isolation and seed.

    *isolation* is what the marks set explicitly (None: they did not).
    """
    if isolation not in (None, "database"):
        raise ValueError(
            "template= and seed= give the test a database of its own, cloned from that "
            f"template, so they imply isolation='database'; isolation={isolation!r} cannot go "
            "with them: remove one of the two"
        )
    seed = None if spec.seed is None else _seed_target(spec.seed)
    if seed is not None and spec.template in ("empty", "schema"):
        raise ValueError(
            f"template={spec.template!r} runs no seed, so seed={seed!r} would be ignored: "
            "use template='schema+data', or drop seed="
        )
    if spec.template == "schema+data" and seed is None and settings.seed is None:
        raise ValueError(
            "template='schema+data' needs seed data, and the run has none: pass "
            "seed='package.module:function' to the mark, or set the seed setting"
        )
    return dataclasses.replace(spec, isolation="database", seed=seed)


def mark_template(spec: SandboxSpec, base: TemplateSpec) -> TemplateSpec | None:
    """Return the template a test's database comes from; None for the run's own (*base*).

    - ``template="empty"|"schema"|"schema+data"``: the run's migrations (and
      seed, or the mark's) with that setup;
    - ``template=<migrate source>``: that source instead of the run's
      migrations, and only the mark's seed (the run's fits the run's schema);
    - ``seed=`` alone: the run's migrations, then that seed.
    """
    if spec.template is None and spec.seed is None:
        return None
    seed = None if spec.seed is None else _seed_target(spec.seed)
    changes: dict[str, Any]
    if spec.template in _SETUPS:
        changes = {"setup": spec.template}
        if seed is not None:
            changes["seed"] = seed
    elif spec.template is not None:
        changes = {"migrate": spec.template, "seed": seed, "setup": None}
    else:
        changes = {"seed": seed, "setup": None}
    return dataclasses.replace(base, **changes)


def describe_mark(spec: SandboxSpec) -> str:
    """Return the mark that asked for *spec*'s template, as a user would write it."""
    args = [
        f"{name}={value!r}" for name, value in (("template", spec.template), ("seed", spec.seed))
    ]
    return "@pytest.mark.sandbox(" + ", ".join(a for a in args if not a.endswith("=None")) + ")"


def clone_for_mark(
    config: pytest.Config,
    provisioner: Provisioner,
    template: TemplateSpec,
    nodeid: str,
    spec: SandboxSpec,
) -> Lease:
    """Return a clone of the template a test's mark asks for, building it if needed.

    A template that cannot be built (a migration or seed fails, a seed cannot
    be imported) fails the test at setup with one message: the test, its mark,
    the failing step and the database's error, without a traceback through
    sqlsandbox. Its other tests in this process fail the same way at once
    instead of building it again; tests of other templates run.
    """
    failed = config.stash.setdefault(_FAILED_KEY, {})
    error = failed.get(template)
    if error is None:
        try:
            built = provisioner.template(template)
        except SandboxError as exc:
            error = failed[template] = str(exc)
        else:
            # Only the build is remembered: a clone that fails (budget, timeout) is
            # no reason to fail the next test.
            return provisioner.clone("test", template=built)
    pytest.fail(
        f"{nodeid}: sqlsandbox could not build the template of {describe_mark(spec)}, "
        f"so this test has no database.\n{error}",
        pytrace=False,
    )


def _signature() -> str:
    return "sandbox(isolation=None, mode=None, template=None, seed=None)"


def sandbox_spec(item: pytest.Item) -> SandboxSpec:
    """Return how *item* uses the database (cached on the item).

    Marks on the module, class and function are merged, the closest winning
    per argument; what no mark sets comes from the settings.
    """
    spec = item.stash.get(_SPEC_KEY, None)
    if spec is not None:
        return spec
    settings = get_settings(item.config)
    chosen: dict[str, Any] = {"isolation": settings.isolation, "mode": settings.mode}
    isolation = None
    # iter_markers yields the closest mark first; apply the farthest first.
    for mark in reversed(list(item.iter_markers("sandbox"))):
        try:
            given = validate_sandbox(*mark.args, **mark.kwargs)
        except (TypeError, ValueError) as exc:
            message = str(exc).replace("validate_sandbox()", "sandbox()")
            raise pytest.UsageError(
                f"{item.nodeid}: bad @pytest.mark.sandbox: {message} "
                f"(the mark takes {_signature()})"
            ) from None
        chosen.update(given)
        isolation = given.get("isolation", isolation)
    spec = SandboxSpec(**chosen)
    if spec.template is not None or spec.seed is not None:
        try:
            spec = _own_template(spec, isolation, settings)
        except ValueError as exc:
            raise pytest.UsageError(f"{item.nodeid}: bad @pytest.mark.sandbox: {exc}") from None
    item.stash[_SPEC_KEY] = spec
    return spec


def pytest_configure(config: pytest.Config) -> None:
    """Register the mark so ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers",
        f"{_signature()}: how sqlsandbox isolates this test's database "
        "(isolation: transaction|database|none; mode: manual|auto|shared; template: "
        "empty|schema|schema+data or a migrate source; seed: 'package.module:function'; "
        "template or seed imply isolation='database').",
    )


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Generator[None, Any, Any]:
    """Validate sandbox marks as tests are collected: misuse is a collection error.

    A collection error (rather than a UsageError) works the same with and
    without xdist, and names the file and the test.
    """
    result = yield
    for item in result if isinstance(result, list) else [result]:
        if isinstance(item, pytest.Item):
            try:
                sandbox_spec(item)
            except pytest.UsageError as exc:
                raise collector.CollectError(str(exc)) from None
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Validate the marks of tests not collected as Python functions (unittest, ...)."""
    sandbox_spec(item)
