"""The settings inside a real pytest run: flags, env, pyproject, and startup errors."""

from __future__ import annotations

import pytest

from .conftest import MakeProject

SHOW_SETTINGS = """
from sqlsandbox.pytest_plugin import get_settings

def test_show(pytestconfig):
    s = get_settings(pytestconfig)
    print(f"\\nSETTINGS isolation={s.isolation} mode={s.mode} leaks={s.leaks} "
          f"summary={s.summary} keep_server={s.keep_server} url_env={sorted(s.url_env)}")
"""


def test_flag_beats_env_beats_file(
    pytester: pytest.Pytester, make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(
        'isolation = "database"\nmode = "auto"\nleaks = "warn"\nurl_env = ["DATABASE_URL"]\n',
        test_show=SHOW_SETTINGS,
    )
    monkeypatch.setenv("SQLSANDBOX_MODE", "shared")
    monkeypatch.setenv("SQLSANDBOX_LEAKS", "fail")
    monkeypatch.setenv("SQLSANDBOX_KEEP_SERVER", "true")
    result = pytester.runpytest("-s", "--sqlsandbox-leaks=off", "--sqlsandbox-no-keep-server")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "SETTINGS isolation=database mode=shared leaks=off summary=True "
            "keep_server=False url_env=['DATABASE_URL']"
        ]
    )


def test_positive_switch_flag(pytester: pytest.Pytester, make_project: MakeProject) -> None:
    make_project("summary = false\n", test_show=SHOW_SETTINGS)
    result = pytester.runpytest("-s", "--sqlsandbox-summary", "--sqlsandbox-keep-server")
    result.stdout.fnmatch_lines(["SETTINGS * summary=True keep_server=True *"])


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_bad_env_value_stops_the_run_before_any_test(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[str],
) -> None:
    make_project(test_show=SHOW_SETTINGS)
    monkeypatch.setenv("SQLSANDBOX_ISOLATION", "rollback")
    result = pytester.runpytest_subprocess(*workers)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: sqlsandbox: Invalid value for setting 'isolation' from env "
            "SQLSANDBOX_ISOLATION: 'rollback'. Allowed: one of 'transaction', 'database', "
            "'none'. Change it in env SQLSANDBOX_ISOLATION (see docs/configuration.md)."
        ]
    )
    assert "SETTINGS" not in result.stdout.str()


def test_bad_flag_value(pytester: pytest.Pytester, make_project: MakeProject) -> None:
    make_project(test_show=SHOW_SETTINGS)
    result = pytester.runpytest("--sqlsandbox-timeout=soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: sqlsandbox: Invalid value for setting 'timeout' from flag "
            "--sqlsandbox-timeout: 'soon'. Allowed: a number of seconds >= 0*"
        ]
    )


def test_unknown_key_in_pyproject(pytester: pytest.Pytester, make_project: MakeProject) -> None:
    make_project('migrations = "alembic"\n', test_show=SHOW_SETTINGS)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        "ERROR: sqlsandbox: Unknown setting 'migrations' in [tool.sqlsandbox] of "
        f"{pytester.path / 'pyproject.toml'} (did you mean 'migrate'?). "
        "Known keys: url, migrate, seed, fingerprint_extra, "
    ) in result.stderr.str()


def test_bad_settings_are_caught_before_conftest_is_imported(
    pytester: pytest.Pytester, make_project: MakeProject
) -> None:
    # An app imported from conftest.py must never run with settings that are wrong.
    make_project('leaks = "never"\n', conftest="print('CONFTEST IMPORTED')\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "CONFTEST IMPORTED" not in result.stdout.str()
    result.stderr.fnmatch_lines(["ERROR: sqlsandbox: Invalid value for setting 'leaks'*"])


def test_help_lists_every_option_in_one_group_even_with_bad_settings(
    pytester: pytest.Pytester, make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project()
    monkeypatch.setenv("SQLSANDBOX_MODE", "broken")
    result = pytester.runpytest("--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "sqlsandbox: isolated, parallel database tests:",
            "  --sqlsandbox-url=VALUE",
            "*--sqlsandbox-url-env=NAMES|NAME=TEMPLATE,...*",
            "  --sqlsandbox-isolation=transaction|database|none",
            "  --sqlsandbox-ownership-timeout=SECONDS",
            "  --sqlsandbox-keep-server",
        ]
    )
    text = " ".join(result.stdout.str().split())
    assert "Turn off with --sqlsandbox-no-keep-server. [env SQLSANDBOX_KEEP_SERVER;" in text
    assert "Turn off with --sqlsandbox-sleep. [env SQLSANDBOX_NO_SLEEP;" in text
    # The switch-off flags work but are documented on their positive twin only.
    assert "  --sqlsandbox-no-keep-server" not in result.stdout.lines
