"""The public surface: ``__all__`` and the real exports must not drift apart."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import sqlsandbox

PUBLIC_MODULES = sorted(
    {"sqlsandbox"}
    | {
        f"sqlsandbox.{info.name}"
        for info in pkgutil.iter_modules(sqlsandbox.__path__)
        if not info.name.startswith("_") and info.name not in {"cli", "pytest_plugin"}
    }
)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_matches_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    declared = set(module.__all__)
    missing = {name for name in declared if not hasattr(module, name)}
    assert not missing, f"{module_name}.__all__ names what it does not have: {missing}"
    # Every public class or function of ours reachable here must be declared,
    # except the shared exceptions, which belong to the top-level package.
    undeclared = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, type(importlib))
        and getattr(value, "__module__", "").startswith("sqlsandbox")
        and (module_name == "sqlsandbox" or value.__module__ != "sqlsandbox._exceptions")
    } - declared
    assert not undeclared, f"{module_name} exposes names missing from __all__: {undeclared}"


def test_contract_names_are_exported() -> None:
    for name in ("SandboxError", "OwnershipError", "ProvisioningError", "ConfigError"):
        assert issubclass(getattr(sqlsandbox, name), Exception)
    assert issubclass(sqlsandbox.OwnershipError, sqlsandbox.SandboxError)
