"""Drivers: route an app's own database connections through the ownership sandbox.

Each driver maps the app's connect / begin / commit / rollback / close onto
the calling code's owner connection (see :mod:`sqlsandbox.ownership`). Driver
modules are private and import their client library on first use; the
public entry points are modules such as :mod:`sqlsandbox.sqlalchemy`.
"""

from __future__ import annotations

__all__: list[str] = []
