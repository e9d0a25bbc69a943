"""The ``@pytest.mark.sandbox`` mark: registration, validation, resolution.

Arguments are validated by calling :func:`validate_sandbox`, which has the
mark's signature, so a typo fails like a bad Python call
(``sandbox() got an unexpected keyword argument 'isolaton'``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from typing import Any

import pytest

from .._settings import IMPORT_TARGET_RE, setting_key
from ._options import get_settings

__all__ = ["SandboxSpec", "sandbox_spec", "validate_sandbox"]

_ISOLATIONS = setting_key("isolation").choices
_MODES = setting_key("mode").choices
_SPEC_KEY = pytest.StashKey["SandboxSpec"]()


@dataclasses.dataclass(frozen=True)
class SandboxSpec:
    """How one test uses the database: the mark's arguments over the settings' defaults."""

    isolation: str
    mode: str
    template: str | None = None
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
    # iter_markers yields the closest mark first; apply the farthest first.
    for mark in reversed(list(item.iter_markers("sandbox"))):
        try:
            chosen.update(validate_sandbox(*mark.args, **mark.kwargs))
        except (TypeError, ValueError) as exc:
            message = str(exc).replace("validate_sandbox()", "sandbox()")
            raise pytest.UsageError(
                f"{item.nodeid}: bad @pytest.mark.sandbox: {message} "
                f"(the mark takes {_signature()})"
            ) from None
    spec = SandboxSpec(**chosen)
    item.stash[_SPEC_KEY] = spec
    return spec


def pytest_configure(config: pytest.Config) -> None:
    """Register the mark so ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers",
        f"{_signature()}: how sqlsandbox isolates this test's database "
        "(isolation: transaction|database|none; mode: manual|auto|shared).",
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
