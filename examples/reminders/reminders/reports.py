"""The sync side: a report generator on the psycopg engine, and its command line.

python -m reminders.reports --user alice@example.com
python -m reminders.reports --all --format text
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .db import SyncSessionLocal
from .models import Reminder, ReminderList, Tag, User, reminder_tags


@dataclasses.dataclass(frozen=True)
class ListSummary:
    id: int
    name: str
    total: int
    open: int
    completed: int
    overdue: int


@dataclasses.dataclass(frozen=True)
class Summary:
    user_id: int
    email: str
    lists: list[ListSummary]
    tags: dict[str, int]
    total: int
    open: int
    completed: int
    overdue: int
    high_priority_open: int
    completion_rate: float


def summarize(session: Session, user_id: int, *, now: datetime | None = None) -> Summary:
    """Return the report of one user, counted by the database."""
    now = now or datetime.now(UTC)
    user = session.get(User, user_id)
    if user is None:
        raise LookupError(f"no user with id {user_id}")
    is_open = Reminder.completed_at.is_(None)
    rows = session.execute(
        select(
            ReminderList.id,
            ReminderList.name,
            func.count(Reminder.id),
            func.count(Reminder.id).filter(is_open),
            func.count(Reminder.id).filter(is_open, Reminder.due_at < now),
            func.count(Reminder.id).filter(is_open, Reminder.priority >= 2),
        )
        .outerjoin(Reminder, Reminder.list_id == ReminderList.id)
        .where(ReminderList.owner_id == user_id)
        .group_by(ReminderList.id)
        .order_by(ReminderList.id)
    ).all()
    lists = [
        ListSummary(id=r[0], name=r[1], total=r[2], open=r[3], completed=r[2] - r[3], overdue=r[4])
        for r in rows
    ]
    tags = dict(
        session.execute(
            select(Tag.name, func.count(reminder_tags.c.reminder_id))
            .outerjoin(reminder_tags, reminder_tags.c.tag_id == Tag.id)
            .where(Tag.owner_id == user_id)
            .group_by(Tag.name)
            .order_by(Tag.name)
        ).all()
    )
    total = sum(item.total for item in lists)
    completed = sum(item.completed for item in lists)
    return Summary(
        user_id=user.id,
        email=user.email,
        lists=lists,
        tags=tags,
        total=total,
        open=total - completed,
        completed=completed,
        overdue=sum(item.overdue for item in lists),
        high_priority_open=sum(r[5] for r in rows),
        completion_rate=round(completed / total, 2) if total else 0.0,
    )


def summary_for_user(
    user_id: int, *, session_factory: Callable[[], Session] = SyncSessionLocal
) -> dict[str, Any]:
    """Return one user's report as plain data (what the HTTP endpoint sends)."""
    with session_factory() as session:
        return dataclasses.asdict(summarize(session, user_id))


def summaries(
    emails: Sequence[str] | None, *, session_factory: Callable[[], Session] = SyncSessionLocal
) -> list[Summary]:
    """Return the reports of the users with these emails (None: every user), by id."""
    with session_factory() as session:
        query = select(User.id).order_by(User.id)
        if emails is not None:
            query = query.where(User.email.in_([e.lower() for e in emails]))
        ids = list(session.scalars(query))
        if emails is not None and len(ids) != len(set(emails)):
            known = set(session.scalars(select(User.email).where(User.id.in_(ids))))
            missing = sorted({e.lower() for e in emails} - known)
            raise LookupError(f"unknown user(s): {', '.join(missing)}")
        return [summarize(session, user_id) for user_id in ids]


def render_text(summary: Summary) -> str:
    """Return a report as a few lines of text."""
    lines = [
        f"{summary.email}: {summary.open} open, {summary.completed} done, "
        f"{summary.overdue} overdue ({summary.completion_rate:.0%} complete)"
    ]
    lines += [
        f"  {item.name}: {item.open} open / {item.total} ({item.overdue} overdue)"
        for item in summary.lists
    ]
    if summary.tags:
        lines.append("  tags: " + ", ".join(f"{k} {v}" for k, v in summary.tags.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print reports; exit 2 on unknown users."""
    parser = argparse.ArgumentParser(prog="python -m reminders.reports")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", action="append", metavar="EMAIL", help="report on this user")
    who.add_argument("--all", action="store_true", help="report on every user")
    parser.add_argument("--format", choices=("json", "text"), default="json")
    args = parser.parse_args(argv)
    try:
        found = summaries(None if args.all else args.user)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps([dataclasses.asdict(s) for s in found], indent=2, sort_keys=True))
    else:
        print("\n".join(render_text(s) for s in found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
