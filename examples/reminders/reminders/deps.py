"""FastAPI dependencies: the session, the current user, the bus and the worker pool."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from .db import get_session
from .events import EventBus, bus
from .models import User
from .security import InvalidToken, decode_token
from .workers import NotificationPool

SessionDep = Annotated[AsyncSession, Depends(get_session)]
_bearer = HTTPBearer(auto_error=False)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """Return the user the bearer token was issued for."""
    if credentials is None:
        raise _unauthorized("Not authenticated")
    try:
        user_id = decode_token(credentials.credentials)
    except InvalidToken as exc:
        raise _unauthorized(f"Invalid token: {exc}") from None
    user = await session.get(User, user_id)
    if user is None:
        raise _unauthorized("Invalid token: unknown user")
    if not user.is_active:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Inactive user")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    """Return the current user if they are an administrator."""
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Administrators only")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


def get_bus() -> EventBus:
    """Return the app's event bus (override in tests to use another)."""
    return bus


BusDep = Annotated[EventBus, Depends(get_bus)]


def get_pool(request: Request) -> NotificationPool:
    """Return the running notification pool, or answer 503 when the app has none."""
    pool: NotificationPool | None = getattr(request.app.state, "notifications", None)
    if pool is None or not pool.running:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="Notifications are off")
    return pool


PoolDep = Annotated[NotificationPool, Depends(get_pool)]
