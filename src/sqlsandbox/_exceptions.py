"""Every exception sqlsandbox raises on purpose.

Hierarchy::

    SandboxError                 base of everything below
    ├── ConfigError              bad settings, unknown URL scheme, missing extra
    ├── ProvisioningError        a server, template or clone could not be made
    ├── OwnershipError           a connection was used without ownership
    ├── VirtualDeadlineError     virtual clock passed its deadline (also TimeoutError)
    ├── WaitTimeoutError         eventually / Probe gave up (also AssertionError)
    ├── StuckTaskError           a task ignored cancellation
    └── ProcessStartError        a helper process never became ready

Messages say what happened, where, and the fix; they never contain a password.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "OwnershipError",
    "ProcessStartError",
    "ProvisioningError",
    "SandboxError",
    "StuckTaskError",
    "VirtualDeadlineError",
    "WaitTimeoutError",
]

DOCS = "https://sqlsandbox.readthedocs.io/en/latest"


class SandboxError(Exception):
    """Base class of every error sqlsandbox raises."""


class ConfigError(SandboxError):
    """Settings, URLs or installed extras do not allow what was asked."""


class ProvisioningError(SandboxError):
    """A server, template or clone could not be created, reached or removed."""


class OwnershipError(SandboxError):
    """A sandboxed connection was used by a caller that does not own it."""


class VirtualDeadlineError(SandboxError, TimeoutError):
    """The virtual clock passed the deadline given to ``virtual_time``."""


class WaitTimeoutError(SandboxError, AssertionError):
    """A condition (``eventually``) or a message (``Probe``) did not come in time.

    An ``AssertionError`` so a test shows it as a failed expectation.
    """


class StuckTaskError(SandboxError):
    """A task did not finish within the bound after it was cancelled."""


class ProcessStartError(SandboxError):
    """A process or in-thread server exited or never became ready."""


def missing_extra(module: str, extra: str, purpose: str) -> ConfigError:
    """Build the error for an optional dependency that is not installed."""
    return ConfigError(
        f"{purpose} needs the {module!r} package, which is not installed. "
        f"Install it with: pip install 'sqlsandbox[{extra}]'"
    )
