"""The sqlsandbox pytest plugin (registered through the ``pytest11`` entry point).

This module only lists the plugin's parts; each lives in a module of its own
topic and pytest registers them through ``pytest_plugins``.
"""

from __future__ import annotations

from ._database import SandboxHandle as SandboxHandle
from ._marks import SandboxSpec as SandboxSpec
from ._options import get_settings as get_settings
from ._summary import RunRecorder as RunRecorder
from ._summary import get_recorder as get_recorder
from ._unique import Unique as Unique

__all__ = [
    "RunRecorder",
    "SandboxHandle",
    "SandboxSpec",
    "Unique",
    "get_recorder",
    "get_settings",
]

pytest_plugins = [
    "sqlsandbox.pytest_plugin._options",
    "sqlsandbox.pytest_plugin._xdist",
    "sqlsandbox.pytest_plugin._marks",
    "sqlsandbox.pytest_plugin._database",
    "sqlsandbox.pytest_plugin._fixtures",
    "sqlsandbox.pytest_plugin._http",
    "sqlsandbox.pytest_plugin._summary",
    "sqlsandbox.pytest_plugin._runtime",
]
