"""The sync side: the report generator on the psycopg engine, its command line, its endpoint."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from reminders.models import Reminder, User
from reminders.reports import main, render_text, summaries, summarize, summary_for_user
from sqlalchemy.orm import Session

from sqlsandbox.pytest_plugin import Unique

ALICE_REPORT = {
    "user_id": 1,
    "email": "alice@example.com",
    "lists": [{"id": 1, "name": "Home", "total": 4, "open": 3, "completed": 1, "overdue": 2}],
    "tags": {"errands": 2, "health": 1, "urgent": 1},
    "total": 4,
    "open": 3,
    "completed": 1,
    "overdue": 2,
    "high_priority_open": 1,
    "completion_rate": 0.25,
}
BOB_REPORT = {
    "user_id": 2,
    "email": "bob@example.com",
    "lists": [{"id": 2, "name": "Work", "total": 2, "open": 1, "completed": 1, "overdue": 0}],
    "tags": {"meetings": 2},
    "total": 2,
    "open": 1,
    "completed": 1,
    "overdue": 0,
    "high_priority_open": 1,
    "completion_rate": 0.5,
}
NOW = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(("user_id", "expected"), [(1, ALICE_REPORT), (2, BOB_REPORT)])
def test_report_of_the_sample_users(
    db_session: Session, user_id: int, expected: dict[str, object]
) -> None:
    import dataclasses

    assert dataclasses.asdict(summarize(db_session, user_id, now=NOW)) == expected


@pytest.mark.parametrize(
    ("now", "overdue"),
    [
        (datetime(2024, 1, 1, tzinfo=UTC), 0),
        (datetime(2024, 1, 5, 9, 0, tzinfo=UTC), 0),  # due exactly now: not yet overdue
        (datetime(2024, 1, 5, 9, 1, tzinfo=UTC), 1),
        (datetime(2024, 3, 1, tzinfo=UTC), 2),
        (datetime(2100, 1, 1, tzinfo=UTC), 2),  # the dentist is done, the plants have no date
    ],
)
def test_overdue_depends_on_now(db_session: Session, now: datetime, overdue: int) -> None:
    assert summarize(db_session, 1, now=now).overdue == overdue


@pytest.mark.parametrize("added", [1, 3, 10])
def test_report_counts_new_reminders(db_session: Session, added: int) -> None:
    db_session.add_all(Reminder(list_id=1, title=f"n{n}", priority=2) for n in range(added))
    db_session.commit()
    report = summarize(db_session, 1, now=NOW)
    assert (report.total, report.open, report.high_priority_open) == (
        4 + added,
        3 + added,
        1 + added,
    )
    assert report.completion_rate == round(1 / (4 + added), 2)


def test_report_counts_completions(db_session: Session) -> None:
    for reminder_id in (1, 2, 4):
        reminder = db_session.get(Reminder, reminder_id)
        assert reminder is not None
        reminder.completed_at = NOW
    db_session.commit()
    report = summarize(db_session, 1, now=NOW)
    assert (report.open, report.completed, report.overdue, report.completion_rate) == (0, 4, 0, 1.0)


def test_report_of_a_user_without_lists(db_session: Session, unique: Unique) -> None:
    user = User(email=unique.email(), name="Empty", password_hash="x")
    db_session.add(user)
    db_session.commit()
    report = summarize(db_session, user.id, now=NOW)
    assert (report.lists, report.tags, report.total, report.completion_rate) == ([], {}, 0, 0.0)


def test_report_of_an_unknown_user(db_session: Session) -> None:
    with pytest.raises(LookupError, match="no user with id 999"):
        summarize(db_session, 999)


def test_summary_for_user_uses_the_apps_sync_engine() -> None:
    report = summary_for_user(2)
    assert report["email"] == "bob@example.com"
    assert report["lists"] == [
        {"id": 2, "name": "Work", "total": 2, "open": 1, "completed": 1, "overdue": 0}
    ]


@pytest.mark.parametrize(
    ("emails", "expected"),
    [
        (None, ["alice@example.com", "bob@example.com"]),
        (["bob@example.com"], ["bob@example.com"]),
        (["BOB@example.com", "alice@example.com"], ["alice@example.com", "bob@example.com"]),
    ],
)
def test_summaries_by_email(emails: list[str] | None, expected: list[str]) -> None:
    assert [s.email for s in summaries(emails)] == expected


def test_summaries_name_unknown_emails() -> None:
    with pytest.raises(LookupError, match=r"unknown user\(s\): carol@example\.com"):
        summaries(["alice@example.com", "carol@example.com"])


def test_render_text() -> None:
    (report,) = summaries(["alice@example.com"])
    lines = render_text(report).splitlines()
    assert lines[0].startswith("alice@example.com: 3 open, 1 done, ")
    assert lines[0].endswith("(25% complete)")
    assert lines[1].startswith("  Home: 3 open / 4 (")
    assert lines[2] == "  tags: errands 2, health 1, urgent 1"


# -- the command line -----------------------------------------------------------------------


def test_cli_json_for_one_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--user", "bob@example.com"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert {k: report[k] for k in ("email", "total", "open", "tags")} == {
        "email": "bob@example.com",
        "total": 2,
        "open": 1,
        "tags": {"meetings": 2},
    }


def test_cli_text_for_everyone(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--all", "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("alice@example.com: 3 open, 1 done")
    assert "\nbob@example.com: 1 open, 1 done" in out


def test_cli_sees_what_the_test_wrote(
    db_session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    db_session.add(Reminder(list_id=2, title="Expenses"))
    db_session.commit()
    assert main(["--user", "bob@example.com"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["total"] == 3


def test_cli_unknown_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--user", "nobody@example.com"]) == 2
    assert capsys.readouterr().err == "error: unknown user(s): nobody@example.com\n"


@pytest.mark.parametrize(
    "argv", [[], ["--all", "--user", "a@example.com"], ["--all", "--format", "xml"]]
)
def test_cli_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: python -m reminders.reports" in capsys.readouterr().err
