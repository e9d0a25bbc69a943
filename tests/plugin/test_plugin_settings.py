"""load_settings: precedence, conversions and every error, without pytest in the way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sqlsandbox import ConfigError
from sqlsandbox._settings import KEYS, Settings, load_settings


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "pyproject.toml").write_text("[tool.sqlsandbox]\n" + body)
    return tmp_path


def test_defaults_without_pyproject(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, {}, {})
    assert settings == Settings()
    assert settings.isolation == "transaction"
    assert settings.mode == "manual"
    assert settings.leaks == "cancel"
    assert settings.ownership_timeout == 120.0
    assert settings.timeout == 60.0
    assert settings.reset_sequences is True
    assert settings.summary is True
    assert settings.origin("isolation") == "default"


def test_flag_beats_env_beats_file(tmp_path: Path) -> None:
    root = write(tmp_path, 'isolation = "database"\nmode = "auto"\nleaks = "warn"\n')
    env = {"SQLSANDBOX_MODE": "shared", "SQLSANDBOX_LEAKS": "fail"}
    settings = load_settings(root, env, {"leaks": "off"})
    assert (settings.isolation, settings.mode, settings.leaks) == ("database", "shared", "off")
    assert settings.origin("isolation") == f"file {root / 'pyproject.toml'}"
    assert settings.origin("mode") == "env SQLSANDBOX_MODE"
    assert settings.origin("leaks") == "flag --sqlsandbox-leaks"


def test_empty_env_value_and_none_flag_count_as_unset(tmp_path: Path) -> None:
    root = write(tmp_path, 'mode = "auto"\n')
    settings = load_settings(root, {"SQLSANDBOX_MODE": "  "}, {"mode": None})
    assert settings.mode == "auto"


def test_dashed_keys_in_the_file_are_accepted(tmp_path: Path) -> None:
    root = write(tmp_path, "keep-server = true\nwarm-pool = 3\n")
    settings = load_settings(root, {}, {})
    assert settings.keep_server is True
    assert settings.warm_pool == 3


@pytest.mark.parametrize(
    ("name", "file_value", "text", "expected"),
    [
        pytest.param("keep_server", "true", "yes", True, id="bool"),
        pytest.param("summary", "false", "off", False, id="bool-off"),
        pytest.param("timeout", "12.5", "12.5", 12.5, id="seconds"),
        pytest.param("timeout", "0", "off", None, id="seconds-disabled"),
        pytest.param("ownership_timeout", "false", "none", None, id="seconds-false"),
        pytest.param("warm_pool", "0", "0", 0, id="count-zero"),
        pytest.param("max_databases", '"auto"', "auto", None, id="count-auto"),
        pytest.param("engines", '["a.b:engine", "c:d"]', "a.b:engine, c:d", ("a.b:engine", "c:d")),
        pytest.param("leak_allowlist", '["beat"]', "beat", ("beat",), id="list"),
        pytest.param("migrate", '"alembic"', "alembic", "alembic", id="migrate-alembic"),
        pytest.param("migrate", '"sql:db/sql/"', "sql:db/sql/", "sql:db/sql/", id="migrate-sql"),
        pytest.param("url", '"sqlite"', "sqlite", "sqlite", id="url-sqlite"),
    ],
)
def test_file_and_text_forms_give_the_same_value(
    tmp_path: Path, name: str, file_value: str, text: str, expected: object
) -> None:
    from_file = load_settings(write(tmp_path, f"{name} = {file_value}\n"), {}, {})
    from_env = load_settings(tmp_path / "elsewhere", {f"SQLSANDBOX_{name.upper()}": text}, {})
    from_flag = load_settings(tmp_path / "elsewhere", {}, {name: text})
    assert getattr(from_file, name) == getattr(from_env, name) == getattr(from_flag, name)
    assert getattr(from_file, name) == expected


@pytest.mark.parametrize(
    ("file_value", "text", "expected"),
    [
        pytest.param('["DATABASE_URL", "ASYNC_URL"]', "DATABASE_URL,ASYNC_URL", None, id="list"),
        pytest.param(
            '{ PGHOST = "{host}", DB = "{url}" }',
            "PGHOST={host},DB={url}",
            {"PGHOST": "{host}", "DB": "{url}"},
            id="table",
        ),
    ],
)
def test_url_env_forms(
    tmp_path: Path, file_value: str, text: str, expected: dict[str, str] | None
) -> None:
    from_file = load_settings(write(tmp_path, f"url_env = {file_value}\n"), {}, {})
    from_env = load_settings(tmp_path / "x", {"SQLSANDBOX_URL_ENV": text}, {})
    expected = expected or {"DATABASE_URL": "{url}", "ASYNC_URL": "{url}"}
    assert dict(from_file.url_env) == dict(from_env.url_env) == expected


def test_url_env_as_json_in_env(tmp_path: Path) -> None:
    settings = load_settings(
        tmp_path, {"SQLSANDBOX_URL_ENV": '{"POSTGRES_PORT": "{port}", "X": "a,b={user}"}'}, {}
    )
    assert dict(settings.url_env) == {"POSTGRES_PORT": "{port}", "X": "a,b={user}"}


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, 'url_env = ["A"]\n'), {}, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.isolation = "none"  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.url_env["B"] = "{url}"  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("isolation", "transactional", "one of 'transaction', 'database', 'none'"),
        ("mode", "sometimes", "one of 'manual', 'auto', 'shared'"),
        ("leaks", "loud", "one of 'fail', 'cancel', 'warn', 'off'"),
        ("keep_server", "maybe", "true or false"),
        ("timeout", "-1", "a number of seconds >= 0"),
        ("ownership_timeout", "soon", "a number of seconds >= 0"),
        ("warm_pool", "-2", "a whole number >= 0, or 'auto'"),
        ("max_databases", "0", "a whole number >= 1, or 'auto'"),
        ("engines", "a:b,myapp.engine", "'myapp.engine' is not an import target"),
        ("seed", "myapp.load", "'package.module:attribute'"),
        ("migrate", "flyway", "'alembic', 'alembic:path/to/alembic.ini'"),
        ("url", "localhost:5432", "a database server URL"),
        ("url_env", "DATABASE-URL", "'DATABASE-URL' is not an env var name"),
        ("url_env", "A={hostname}", "template of A uses unknown placeholder {hostname}"),
        ("url_env", "A={host", "template of A is malformed"),
        ("url_env", "[1, 2]", "a list of env var names"),
    ],
)
@pytest.mark.parametrize("source", ["env", "flag"])
def test_bad_text_values_name_key_source_value_and_allowed(
    tmp_path: Path, source: str, name: str, value: str, allowed: str
) -> None:
    env = {f"SQLSANDBOX_{name.upper()}": value} if source == "env" else {}
    flags = {name: value} if source == "flag" else {}
    where = f"env SQLSANDBOX_{name.upper()}" if source == "env" else "flag --sqlsandbox-"
    with pytest.raises(ConfigError) as excinfo:
        load_settings(tmp_path, env, flags)
    message = str(excinfo.value)
    assert f"Invalid value for setting {name!r} from {where}" in message
    assert repr(value) in message
    assert allowed in message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("isolation = 3", "from [tool.sqlsandbox] of"),
        ("keep_server = 1", "Allowed: true or false"),
        ("timeout = true", "a number of seconds >= 0"),
        ("warm_pool = 1.5", "a whole number >= 0"),
        ('engines = "myapp.db:engine"', "a list of import targets"),
        ("url_env = [1]", "a list of env var names, or a table"),
        ("url_env = { A = 1 }", "a list of env var names, or a table"),
    ],
)
def test_bad_file_values(tmp_path: Path, body: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="Invalid value for setting") as excinfo:
        load_settings(write(tmp_path, body + "\n"), {}, {})
    assert fragment in str(excinfo.value)
    assert str(tmp_path / "pyproject.toml") in str(excinfo.value)


def test_unknown_key_in_file_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"Unknown setting 'isolaton' in \[tool.sqlsandbox\] of .*pyproject.toml "
        r"\(did you mean 'isolation'\?\)\. Known keys: url, migrate, ",
    ):
        load_settings(write(tmp_path, 'isolaton = "none"\n'), {}, {})


def test_unknown_flag_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Unknown setting 'colour' given as a flag"):
        load_settings(tmp_path, {}, {"colour": "red"})


def test_broken_toml_and_wrong_table_type(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.sqlsandbox\n")
    with pytest.raises(ConfigError, match=r"Cannot read .*pyproject.toml: .*Fix the file"):
        load_settings(tmp_path, {}, {})
    (tmp_path / "pyproject.toml").write_text('[tool]\nsqlsandbox = "on"\n')
    with pytest.raises(ConfigError, match=r"\[tool.sqlsandbox\] in .* must be a table, not str"):
        load_settings(tmp_path, {}, {})


@pytest.mark.parametrize(
    "value",
    ["postgresql://app:s3cr3t@db.internal/app?x", "postgresql//app:s3cr3t@db.internal/app"],
)
def test_errors_never_show_a_password(tmp_path: Path, value: str) -> None:
    # The URL itself is fine in the first case: the error is in another key,
    # so make the URL the bad value by giving it where a choice is expected.
    with pytest.raises(ConfigError) as excinfo:
        load_settings(tmp_path, {"SQLSANDBOX_ISOLATION": value}, {})
    assert "s3cr3t" not in str(excinfo.value)
    assert "app:***@db.internal" in str(excinfo.value)


def test_every_key_has_env_flag_and_help() -> None:
    names = [key.name for key in KEYS]
    assert names == [f.name for f in dataclasses.fields(Settings) if f.name != "origins"]
    for key in KEYS:
        assert key.env == "SQLSANDBOX_" + key.name.upper()
        assert key.flag == "--sqlsandbox-" + key.name.replace("_", "-")
        assert key.help.endswith(".")
