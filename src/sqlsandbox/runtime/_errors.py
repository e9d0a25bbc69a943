"""Errors of the runtime layer; all are :class:`~sqlsandbox.SandboxError` subclasses.

Hierarchy::

    SandboxError
    ├── VirtualDeadlineError (also TimeoutError)   virtual clock passed its deadline
    ├── WaitTimeoutError (also AssertionError)     eventually / Probe gave up
    ├── StuckTaskError                             a task ignored cancellation
    └── ProcessStartError                          a helper process never became ready
"""

from __future__ import annotations

from .._exceptions import SandboxError

__all__ = ["ProcessStartError", "StuckTaskError", "VirtualDeadlineError", "WaitTimeoutError"]


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
