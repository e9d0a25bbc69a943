"""The async half of deterministic tests, usable without any database.

Virtual time, leak detection, hang dumps, waiting without sleeping
(:func:`eventually`, :class:`Probe`), helper processes and in-thread servers,
and background-task helpers. See ``docs/runtime.md``.
"""

from __future__ import annotations

from .._exceptions import ProcessStartError as ProcessStartError
from .._exceptions import StuckTaskError as StuckTaskError
from .._exceptions import VirtualDeadlineError as VirtualDeadlineError
from .._exceptions import WaitTimeoutError as WaitTimeoutError
from ._background import Iterations as Iterations
from ._background import assert_restarted as assert_restarted
from ._background import cancel_and_wait as cancel_and_wait
from ._background import crash_task as crash_task
from ._background import run_iterations as run_iterations
from ._background import run_once as run_once
from ._eventually import eventually as eventually
from ._hangs import dump_all as dump_all
from ._hangs import dump_tasks as dump_tasks
from ._hangs import dump_threads as dump_threads
from ._leaks import add_leak_check as add_leak_check
from ._probe import Probe as Probe
from ._processes import ManagedProcess as ManagedProcess
from ._processes import ThreadServer as ThreadServer
from ._processes import free_port as free_port
from ._processes import http_ok as http_ok
from ._processes import log_line as log_line
from ._processes import port_open as port_open
from ._processes import release_port as release_port
from ._processes import start_process as start_process
from ._tasks import await_chain as await_chain
from ._virtual_time import VirtualClock as VirtualClock
from ._virtual_time import current_clock as current_clock
from ._virtual_time import new_virtual_time_loop as new_virtual_time_loop
from ._virtual_time import virtual_time as virtual_time

__all__ = [
    "Iterations",
    "ManagedProcess",
    "Probe",
    "ProcessStartError",
    "StuckTaskError",
    "ThreadServer",
    "VirtualClock",
    "VirtualDeadlineError",
    "WaitTimeoutError",
    "add_leak_check",
    "assert_restarted",
    "await_chain",
    "cancel_and_wait",
    "crash_task",
    "current_clock",
    "dump_all",
    "dump_tasks",
    "dump_threads",
    "eventually",
    "free_port",
    "http_ok",
    "log_line",
    "new_virtual_time_loop",
    "port_open",
    "release_port",
    "run_iterations",
    "run_once",
    "start_process",
    "virtual_time",
]
