"""docs/configuration.md is generated from the settings table: they must not drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlsandbox._settings import KEYS, Key, load_settings, replace_reference

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_configuration_reference_matches_the_settings_table() -> None:
    document = (DOCS / "configuration.md").read_text()
    assert document == replace_reference(document), (
        "docs/configuration.md is out of date; regenerate it with "
        "`python -m sqlsandbox._settings docs/configuration.md`"
    )
    for key in KEYS:
        assert f"### {key.name}\n" in document


@pytest.mark.parametrize("key", KEYS, ids=[key.name for key in KEYS])
def test_every_documented_example_is_valid_and_changes_something(tmp_path: Path, key: Key) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.sqlsandbox]\n{key.example}\n")
    settings = load_settings(tmp_path, {}, {})
    assert settings.origin(key.name).startswith("file ")
    assert getattr(settings, key.name) != key.default or key.name in {"isolation", "mode"}


def test_table_form_example_in_the_guide_is_valid(tmp_path: Path) -> None:
    document = (DOCS / "configuration.md").read_text()
    block = document.split("[tool.sqlsandbox.url_env]\n", 1)[1].split("```", 1)[0]
    (tmp_path / "pyproject.toml").write_text("[tool.sqlsandbox.url_env]\n" + block)
    settings = load_settings(tmp_path, {}, {})
    assert dict(settings.url_env)["POSTGRES_PORT"] == "{port}"
