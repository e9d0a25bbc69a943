"""Hand-written isolation strategies for the reference suite, as pytest plugins.

Each module is what a team writes in its ``conftest.py`` today instead of
sqlsandbox; the ``suite`` benchmark runs ``examples/reminders/tests`` with
``-p no:sqlsandbox -p benchmarks.suite_plugins.<name>``. They offer the
fixtures the suite uses from sqlsandbox (``db_session``, ``async_db_session``,
``db_url``, ``unique``) and honour ``@pytest.mark.sandbox(isolation="database")``
with a fresh copy of a template they build once, so the same tests run
unchanged. They are benchmark workloads, not recommendations.
"""
