"""Request and response bodies."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def _email(value: str) -> str:
    value = value.strip().lower()
    if len(value) > 255 or not _EMAIL_RE.match(value):
        raise ValueError("not a valid email address")
    return value


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("due_at needs a time zone (for example 2030-01-01T09:00:00Z)")
    # Stored and returned in UTC, whatever offset the client sent.
    return value.astimezone(UTC)


def _tag(value: str) -> str:
    value = value.strip().lower()
    if not _TAG_RE.match(value):
        raise ValueError("tags are lower-case letters, digits and dashes")
    return value


Email = Annotated[str, AfterValidator(_email)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
Color = Annotated[str, StringConstraints(pattern=r"^#[0-9a-fA-F]{6}$")]
TagName = Annotated[str, StringConstraints(min_length=1, max_length=50), AfterValidator(_tag)]
Due = Annotated[datetime | None, AfterValidator(_aware)]
Priority = Annotated[int, Field(ge=0, le=3)]


class RegisterIn(BaseModel):
    email: Email
    password: Password
    name: Name


class LoginIn(BaseModel):
    email: str
    password: str


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str
    is_admin: bool
    is_active: bool


class UserUpdate(BaseModel):
    name: Name | None = None
    password: Password | None = None


class ListIn(BaseModel):
    name: Name
    color: Color = "#3478f6"


class ListUpdate(BaseModel):
    name: Name | None = None
    color: Color | None = None


class ListOut(BaseModel):
    id: int
    name: str
    color: str
    reminder_count: int
    open_count: int


class ReminderIn(BaseModel):
    list_id: int
    title: Title
    notes: Annotated[str, StringConstraints(max_length=2000)] = ""
    due_at: Due = None
    priority: Priority = 0
    tags: Annotated[list[TagName], Field(max_length=10)] = []


class ReminderUpdate(BaseModel):
    list_id: int | None = None
    title: Title | None = None
    notes: Annotated[str, StringConstraints(max_length=2000)] | None = None
    due_at: Due = None
    priority: Priority | None = None


class ReminderOut(BaseModel):
    id: int
    list_id: int
    title: str
    notes: str
    due_at: datetime | None
    priority: int
    completed: bool
    completed_at: datetime | None
    notified_at: datetime | None
    tags: list[str]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class TagIn(BaseModel):
    name: TagName


class TagOut(BaseModel):
    id: int
    name: str
    reminder_count: int


class ActiveIn(BaseModel):
    is_active: bool
