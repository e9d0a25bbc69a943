"""The ``--sqlsandbox-*`` options and the one Settings object of a pytest run.

Options, env parsing and validation all come from the key table in
:mod:`sqlsandbox._settings`; this module only adapts it to pytest.
"""

from __future__ import annotations

import argparse
import os

import pytest

from .._exceptions import ConfigError
from .._settings import KEYS, Settings, load_settings

__all__ = ["SETTINGS_KEY", "get_settings"]

SETTINGS_KEY = pytest.StashKey[Settings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add one option per setting to the ``sqlsandbox`` group."""
    group = parser.getgroup("sqlsandbox", "sqlsandbox: isolated, parallel database tests")
    for key in KEYS:
        where = f"env {key.env}; default {key.kind.render(key.default) or 'not set'}"
        if key.negative_flag is not None:
            group.addoption(
                key.flag,
                action="store_const",
                const="true",
                dest=key.dest,
                default=None,
                help=f"{key.help} Turn off with {key.negative_flag}. [{where}]",
            )
            group.addoption(
                key.negative_flag,
                action="store_const",
                const="false",
                dest=key.dest,
                default=None,
                help=argparse.SUPPRESS,
            )
        else:
            group.addoption(
                key.flag,
                action="store",
                dest=key.dest,
                default=None,
                metavar=key.kind.metavar,
                help=f"{key.help} [{where}]",
            )


def get_settings(config: pytest.Config) -> Settings:
    """Return the settings of this run, building and validating them on first use.

    Raise pytest.UsageError naming the key, its source, the value and what
    is allowed, so a bad setting stops the run before any test.
    """
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is not None:
        return settings
    # Before pytest parses the full command line (pytest_load_initial_conftests)
    # config.option holds only defaults; the early parse has the real flags.
    namespace = getattr(config, "known_args_namespace", None) or config.option
    flags = {key.name: getattr(namespace, key.dest, None) for key in KEYS}
    try:
        settings = load_settings(config.rootpath, os.environ, flags)
    except ConfigError as exc:
        raise pytest.UsageError(f"sqlsandbox: {exc}") from None
    config.stash[SETTINGS_KEY] = settings
    return settings


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Validate the settings before any conftest.py is imported."""
    namespace = early_config.known_args_namespace
    if not (namespace.help or namespace.version):
        get_settings(early_config)


def pytest_configure(config: pytest.Config) -> None:
    """Validate the settings when the plugin was loaded too late for the early hook."""
    if not (config.option.help or config.option.version):
        get_settings(config)
