"""The public API of ``sqlsandbox.provision`` is exactly its ``__all__``."""

from __future__ import annotations

import types

import sqlsandbox.provision as provision


def test_all_matches_the_exported_names() -> None:
    public = {
        name
        for name, value in vars(provision).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public == set(provision.__all__)
    for name in provision.__all__:
        assert getattr(provision, name) is not None
