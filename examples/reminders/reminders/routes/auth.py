"""Registration, tokens, and the current user's profile."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..deps import BusDep, CurrentUser, SessionDep
from ..events import Event
from ..models import User
from ..schemas import LoginIn, RegisterIn, TokenOut, UserOut, UserUpdate
from ..security import create_access_token, hash_password, verify_password

router = APIRouter(tags=["auth"])


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def register(body: RegisterIn, session: SessionDep, bus: BusDep) -> User:
    """Create an account."""
    user = User(email=body.email, name=body.name, password_hash=hash_password(body.password))
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, detail="Email already registered") from None
    bus.publish(Event("user.registered", {"id": user.id, "email": user.email}, actor_id=user.id))
    return user


@router.post("/auth/token", response_model=TokenOut)
async def login(body: LoginIn, session: SessionDep) -> TokenOut:
    """Exchange an email and password for an access token."""
    user = await session.scalar(select(User).where(User.email == func.lower(body.email.strip())))
    if user is None or not verify_password(body.password, user.password_hash):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="Incorrect email or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not user.is_active:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Inactive user")
    return TokenOut(access_token=create_access_token(user.id))


@router.get("/users/me", response_model=UserOut)
async def me(user: CurrentUser) -> User:
    """Return the current user."""
    return user


@router.patch("/users/me", response_model=UserOut)
async def update_me(body: UserUpdate, user: CurrentUser, session: SessionDep, bus: BusDep) -> User:
    """Change the current user's name or password."""
    changed = sorted(body.model_fields_set & {"name", "password"})
    if body.name is not None:
        user.name = body.name
    if body.password is not None:
        user.password_hash = hash_password(body.password)
    await session.commit()
    bus.publish(Event("user.updated", {"id": user.id, "fields": changed}, actor_id=user.id))
    return user
