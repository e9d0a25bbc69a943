"""Ownership: Ecto-style sandboxed connections, independent of any driver.

A :class:`Sandbox` serves one database. Code becomes an *owner* with
``checkout()``; drivers ask ``lease()`` / ``alease()`` for the owner's
connection whenever the app takes one from its pool, and map the app's
transactions to savepoints through the :class:`Lease`. Drivers describe
their connections with the adapter protocol (:class:`SyncAdapter`,
:class:`AsyncAdapter`, most simply by subclassing :class:`SQLAdapter` /
:class:`AsyncSQLAdapter`) and open them with a connector
(:class:`Connector`, :class:`AsyncConnector`).

This package imports no database driver.
"""

from __future__ import annotations

from ._adapter import AsyncAdapter as AsyncAdapter
from ._adapter import AsyncConnector as AsyncConnector
from ._adapter import AsyncSQLAdapter as AsyncSQLAdapter
from ._adapter import Connector as Connector
from ._adapter import SQLAdapter as SQLAdapter
from ._adapter import SyncAdapter as SyncAdapter
from ._connection import Lease as Lease
from ._ddl import implicit_commit as implicit_commit
from ._ddl import transaction_control as transaction_control
from ._host import HostLoop as HostLoop
from ._host import abort_transport as abort_transport
from ._host import host_loop as host_loop
from ._host import shutdown_socket as shutdown_socket
from ._messages import caller_name as caller_name
from ._nested import Baseline as Baseline
from ._nested import NestedScope as NestedScope
from ._nested import nested_scope as nested_scope
from ._owner import Owner as Owner
from ._sandbox import Mode as Mode
from ._sandbox import Sandbox as Sandbox
from ._scope import wrote_anything as wrote_anything

__all__ = [
    "AsyncAdapter",
    "AsyncConnector",
    "AsyncSQLAdapter",
    "Baseline",
    "Connector",
    "HostLoop",
    "Lease",
    "Mode",
    "NestedScope",
    "Owner",
    "SQLAdapter",
    "Sandbox",
    "SyncAdapter",
    "abort_transport",
    "caller_name",
    "host_loop",
    "implicit_commit",
    "nested_scope",
    "shutdown_socket",
    "transaction_control",
    "wrote_anything",
]
