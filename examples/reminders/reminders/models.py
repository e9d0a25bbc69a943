"""ORM models. ``audit_logs`` is deliberately not here: only a migration creates it.

That is the situation that breaks suites built on ``Base.metadata.create_all``:
the app writes to a table the metadata does not know (see :mod:`reminders.audit`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


reminder_tags = Table(
    "reminder_tags",
    Base.metadata,
    Column("reminder_id", ForeignKey("reminders.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True, server_default="true")
    is_admin: Mapped[bool] = mapped_column(default=False, server_default="false")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    lists: Mapped[list[ReminderList]] = relationship(
        back_populates="owner", cascade="all, delete-orphan", passive_deletes=True
    )


class ReminderList(Base):
    __tablename__ = "reminder_lists"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_reminder_lists_owner_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    color: Mapped[str] = mapped_column(String(7), default="#3478f6", server_default="#3478f6")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    owner: Mapped[User] = relationship(back_populates="lists")
    reminders: Mapped[list[Reminder]] = relationship(
        back_populates="reminder_list",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Reminder.id",
    )


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_tags_owner_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(50))

    reminders: Mapped[list[Reminder]] = relationship(
        secondary=reminder_tags, back_populates="tags", passive_deletes=True
    )


class Reminder(Base):
    __tablename__ = "reminders"

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("reminder_lists.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str] = mapped_column(Text, default="", server_default="")
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    priority: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notify_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    reminder_list: Mapped[ReminderList] = relationship(back_populates="reminders")
    tags: Mapped[list[Tag]] = relationship(
        secondary=reminder_tags, back_populates="reminders", order_by="Tag.name"
    )

    @property
    def completed(self) -> bool:
        """Return whether the reminder is done."""
        return self.completed_at is not None
