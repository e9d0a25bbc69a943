"""Every exception sqlsandbox raises on purpose.

Hierarchy::

    SandboxError                 base of everything below
    ├── ConfigError              bad settings, unknown URL scheme, missing extra
    ├── ProvisioningError        a server, template or clone could not be made
    └── OwnershipError           a connection was used without ownership

Messages say what happened, where, and the fix; they never contain a password.
"""

from __future__ import annotations

__all__ = ["ConfigError", "OwnershipError", "ProvisioningError", "SandboxError"]

DOCS = "https://sqlsandbox.readthedocs.io/en/latest"


class SandboxError(Exception):
    """Base class of every error sqlsandbox raises."""


class ConfigError(SandboxError):
    """Settings, URLs or installed extras do not allow what was asked."""


class ProvisioningError(SandboxError):
    """A server, template or clone could not be created, reached or removed."""


class OwnershipError(SandboxError):
    """A sandboxed connection was used by a caller that does not own it."""


def missing_extra(module: str, extra: str, purpose: str) -> ConfigError:
    """Build the error for an optional dependency that is not installed."""
    return ConfigError(
        f"{purpose} needs the {module!r} package, which is not installed. "
        f"Install it with: pip install 'sqlsandbox[{extra}]'"
    )
