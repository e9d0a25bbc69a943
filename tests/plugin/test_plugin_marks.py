"""@pytest.mark.sandbox: validated like a Python call, merged across levels."""

from __future__ import annotations

import pytest

from sqlsandbox.pytest_plugin._marks import validate_sandbox

from .conftest import MakeProject

SHOW_SPEC = """
import pytest
from sqlsandbox.pytest_plugin._marks import sandbox_spec

@pytest.fixture(autouse=True)
def _show(request):
    spec = sandbox_spec(request.node)
    print(f"\\nSPEC {request.node.name} {spec.isolation} {spec.mode} {spec.template} {spec.seed}")
"""


def test_validate_accepts_the_documented_arguments() -> None:
    assert validate_sandbox() == {}
    assert validate_sandbox("database", "shared") == {"isolation": "database", "mode": "shared"}
    assert validate_sandbox(template="schema", seed="app.seeds:users") == {
        "template": "schema",
        "seed": "app.seeds:users",
    }
    assert validate_sandbox(seed=print) == {"seed": print}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"isolaton": "database"}, TypeError, "unexpected keyword argument 'isolaton'"),
        ({"isolation": "rollback"}, ValueError, "use one of 'transaction', 'database', 'none'"),
        ({"mode": "exclusive"}, ValueError, "use one of 'manual', 'auto', 'shared'"),
        ({"template": ""}, TypeError, "template must be a non-empty string"),
        ({"seed": "app.seeds.users"}, ValueError, "use 'package.module:function'"),
        ({"seed": 3}, TypeError, "seed must be 'package.module:function' or a callable"),
    ],
)
def test_validate_rejects_misuse(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        validate_sandbox(**kwargs)  # type: ignore[arg-type]


def test_too_many_positional_arguments() -> None:
    with pytest.raises(TypeError, match="takes from 0 to 4 positional arguments but 5"):
        validate_sandbox("database", "auto", "t", "a:b", "extra")  # type: ignore[call-arg]


def test_marks_merge_closest_wins_and_settings_fill_the_rest(
    pytester: pytest.Pytester, make_project: MakeProject
) -> None:
    make_project(
        'mode = "auto"\n',
        conftest=SHOW_SPEC,
        test_marks="""
        import pytest

        pytestmark = pytest.mark.sandbox(mode="shared", seed="app.seed:run")

        def test_module_level():
            pass

        @pytest.mark.sandbox(template="schema+data")
        class TestClass:
            @pytest.mark.sandbox(isolation="database", mode="manual")
            def test_method(self):
                pass

            def test_class_level(self):
                pass
        """,
        test_plain="def test_plain():\n    pass\n",
    )
    result = pytester.runpytest("-s", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    # A seed (or template) implies isolation="database".
    result.stdout.fnmatch_lines_random(
        [
            "SPEC test_module_level database shared None app.seed:run",
            "SPEC test_method database manual schema+data app.seed:run",
            "SPEC test_class_level database shared schema+data app.seed:run",
            "SPEC test_plain transaction auto None None",
        ]
    )


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_misuse_is_a_collection_error_naming_the_test(
    pytester: pytest.Pytester, make_project: MakeProject, workers: list[str]
) -> None:
    make_project(
        test_bad="""
        import pytest

        @pytest.mark.sandbox(isolaton="database")
        def test_typo():
            pass

        def test_fine():
            pass
        """,
        test_other="def test_elsewhere():\n    pass\n",
    )
    result = pytester.runpytest(*workers)
    # Serially pytest stops at a collection error; xdist runs the rest and reports it.
    assert result.ret in {pytest.ExitCode.INTERRUPTED, pytest.ExitCode.TESTS_FAILED}
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting test_bad.py*",
            "test_bad.py::test_typo: bad @pytest.mark.sandbox: sandbox() got an unexpected "
            "keyword argument 'isolaton' (the mark takes sandbox(isolation=None, mode=None, "
            "template=None, seed=None))",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_bad_value_on_a_class_names_each_test(
    pytester: pytest.Pytester, make_project: MakeProject
) -> None:
    make_project(
        test_cls="""
        import pytest

        @pytest.mark.sandbox(isolation="rollback")
        class TestBad:
            def test_one(self):
                pass
        """
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        [
            "test_cls.py::TestBad::test_one: bad @pytest.mark.sandbox: isolation='rollback' is "
            "not allowed; use one of 'transaction', 'database', 'none' (the mark takes *"
        ]
    )


def test_unittest_case_with_a_bad_mark_errors_at_setup(
    pytester: pytest.Pytester, make_project: MakeProject
) -> None:
    make_project(
        test_ut="""
        import unittest
        import pytest

        @pytest.mark.sandbox(mode="exclusive")
        class TestUnit(unittest.TestCase):
            def test_one(self):
                pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*test_ut.py::TestUnit::test_one: bad @pytest.mark.sandbox: mode='exclusive' is not*"]
    )


def test_mark_is_registered_for_strict_markers(
    pytester: pytest.Pytester, make_project: MakeProject
) -> None:
    make_project(
        test_ok="""
        import pytest

        @pytest.mark.sandbox(isolation="database")
        def test_ok():
            pass
        """
    )
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.sandbox(isolation=None, mode=None, template=None, seed=None): *"]
    )
