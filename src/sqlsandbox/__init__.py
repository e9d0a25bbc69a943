"""sqlsandbox: fast, isolated, parallel database tests for Python."""

from __future__ import annotations

from ._exceptions import ConfigError as ConfigError
from ._exceptions import OwnershipError as OwnershipError
from ._exceptions import ProvisioningError as ProvisioningError
from ._exceptions import SandboxError as SandboxError
from ._version import __version__ as __version__
from .ownership import Sandbox as Sandbox
from .runtime import Probe as Probe
from .runtime import eventually as eventually

__all__ = [
    "ConfigError",
    "OwnershipError",
    "Probe",
    "ProvisioningError",
    "Sandbox",
    "SandboxError",
    "__version__",
    "eventually",
]
