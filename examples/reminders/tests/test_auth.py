"""Registration, login, tokens and the current user."""

from __future__ import annotations

import base64
import json

import pytest
from helpers import ALICE, BOB, FIRST_NEW_ID, TEST_PASSWORD, bearer
from httpx import AsyncClient
from reminders.models import User
from reminders.security import (
    InvalidToken,
    create_access_token,
    decode_token,
    encode,
    hash_password,
    verify_password,
)
from reminders.settings import get_settings
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession


def _register(email: str = "new@example.com", password: str = "s3cret-pass", name: str = "New"):
    return {"email": email, "password": password, "name": name}


async def user_count(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(User)) or 0


# -- registration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "name", "stored_email"),
    [
        ("new@example.com", "Newcomer", "new@example.com"),
        ("MiXeD@Example.COM", "Mixed Case", "mixed@example.com"),
        ("first.last+tag@example.co.uk", "Plus Sign", "first.last+tag@example.co.uk"),
        ("  spaced@example.com ", "Spaced", "spaced@example.com"),
        ("zoe@example.com", "Zoë Ünicode", "zoe@example.com"),
    ],
)
async def test_register_creates_an_account(
    client: AsyncClient, async_db_session: AsyncSession, email: str, name: str, stored_email: str
) -> None:
    response = await client.post("/auth/register", json=_register(email, name=name))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["email"] == stored_email
    assert body["name"] == name
    assert body["is_admin"] is False
    assert body["is_active"] is True
    stored = await async_db_session.scalar(select(User).where(User.email == stored_email))
    assert stored is not None
    assert stored.password_hash != "s3cret-pass"
    assert verify_password("s3cret-pass", stored.password_hash)


async def test_new_accounts_get_ids_after_the_sample_data(client: AsyncClient) -> None:
    first = await client.post("/auth/register", json=_register("one@example.com"))
    second = await client.post("/auth/register", json=_register("two@example.com"))
    assert first.json()["id"] >= FIRST_NEW_ID
    assert second.json()["id"] > first.json()["id"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"password": "s3cret-pass", "name": "x"}, "email"),
        ({"email": "a@example.com", "name": "x"}, "password"),
        ({"email": "a@example.com", "password": "s3cret-pass"}, "name"),
        (_register(email="not-an-email"), "email"),
        (_register(email="a@b"), "email"),
        (_register(email="two@@example.com"), "email"),
        (_register(email="x" * 250 + "@example.com"), "email"),
        (_register(password="short"), "password"),
        (_register(password="x" * 129), "password"),
        (_register(name="   "), "name"),
        (_register(name="n" * 101), "name"),
        ({"email": "a@example.com", "password": 12345678, "name": "x"}, "password"),
    ],
)
async def test_register_rejects_invalid_input(
    client: AsyncClient, async_db_session: AsyncSession, payload: dict[str, object], field: str
) -> None:
    response = await client.post("/auth/register", json=payload)
    assert response.status_code == 422
    assert field in {error["loc"][-1] for error in response.json()["detail"]}
    assert await user_count(async_db_session) == 2


@pytest.mark.parametrize("email", ["alice@example.com", "ALICE@example.com", " Bob@Example.com"])
async def test_an_email_is_registered_once(
    client: AsyncClient, async_db_session: AsyncSession, email: str
) -> None:
    response = await client.post("/auth/register", json=_register(email))
    assert response.status_code == 409
    assert response.json() == {"detail": "Email already registered"}
    assert await user_count(async_db_session) == 2


async def test_a_failed_registration_does_not_burn_the_next_one(client: AsyncClient) -> None:
    assert (
        await client.post("/auth/register", json=_register("alice@example.com"))
    ).status_code == 409
    response = await client.post("/auth/register", json=_register("carol@example.com"))
    assert response.status_code == 201
    assert response.json()["email"] == "carol@example.com"


# -- login ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "password", "user_id"),
    [
        ("alice@example.com", "alice-password", ALICE),
        ("bob@example.com", "bob-password", BOB),
        ("ALICE@EXAMPLE.COM", "alice-password", ALICE),
        ("  bob@example.com  ", "bob-password", BOB),
    ],
)
async def test_sample_users_log_in(
    client: AsyncClient, email: str, password: str, user_id: int
) -> None:
    response = await client.post("/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert decode_token(body["access_token"]) == user_id


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("alice@example.com", ""),
        ("alice@example.com", "alice"),
        ("alice@example.com", "ALICE-PASSWORD"),
        ("alice@example.com", "alice-password "),
        ("alice@example.com", "bob-password"),
        ("nobody@example.com", "alice-password"),
        ("", "alice-password"),
    ],
)
async def test_wrong_credentials_get_one_answer(
    client: AsyncClient, email: str, password: str
) -> None:
    # The same answer for a wrong password and an unknown email: no account enumeration.
    response = await client.post("/auth/token", json={"email": email, "password": password})
    assert response.status_code == 401
    assert response.json() == {"detail": "Incorrect email or password"}
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_new_account_can_log_in(client: AsyncClient) -> None:
    created = await client.post(
        "/auth/register", json=_register("dave@example.com", "dave-password")
    )
    response = await client.post(
        "/auth/token", json={"email": "dave@example.com", "password": "dave-password"}
    )
    assert response.status_code == 200
    assert decode_token(response.json()["access_token"]) == created.json()["id"]


async def test_test_user_logs_in_with_its_password(client: AsyncClient, test_user: User) -> None:
    response = await client.post(
        "/auth/token", json={"email": test_user.email, "password": TEST_PASSWORD}
    )
    assert response.status_code == 200
    assert decode_token(response.json()["access_token"]) == test_user.id


async def test_an_inactive_user_cannot_log_in(
    client: AsyncClient, async_db_session: AsyncSession, test_user: User
) -> None:
    email = test_user.email
    test_user.is_active = False
    await async_db_session.commit()  # expires test_user: read what you need before
    response = await client.post("/auth/token", json={"email": email, "password": TEST_PASSWORD})
    assert response.status_code == 403
    assert response.json() == {"detail": "Inactive user"}


# -- tokens ----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(payload: dict[str, object]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("garbage", "malformed token"),
        ("a.b", "malformed token"),
        ("a.b.c", "malformed token"),
        (_unsigned({"sub": "1", "exp": 4102444800, "type": "access"}), "unsupported algorithm"),
        (create_access_token(ALICE, secret="someone-else's-secret"), "bad signature"),
        (create_access_token(ALICE, minutes=-1), "token expired"),
        (create_access_token(ALICE, now=0), "token expired"),
        (encode({"sub": "1", "exp": 4102444800, "type": "refresh"}, "x"), "bad signature"),
    ],
)
async def test_bad_tokens_are_refused(client: AsyncClient, token: str, reason: str) -> None:
    response = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json() == {"detail": f"Invalid token: {reason}"}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"sub": "1", "exp": 4102444800, "type": "refresh"}, "not an access token"),
        ({"sub": "1", "type": "access"}, "token expired"),
        ({"sub": "abc", "exp": 4102444800, "type": "access"}, "token has no subject"),
        ({"exp": 4102444800, "type": "access"}, "token has no subject"),
        ({"sub": "999", "exp": 4102444800, "type": "access"}, "unknown user"),
    ],
)
async def test_signed_tokens_with_bad_claims_are_refused(
    client: AsyncClient, payload: dict[str, object], reason: str
) -> None:
    token = encode(payload, get_settings().jwt_secret)
    response = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json() == {"detail": f"Invalid token: {reason}"}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Basic YWxpY2U6cHc="}, {"Authorization": "Bearer"}]
)
async def test_no_bearer_token_is_not_authenticated(
    client: AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/users/me", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Not authenticated"}


async def test_a_token_for_a_deleted_user_stops_working(
    client: AsyncClient,
    async_db_session: AsyncSession,
    test_user: User,
    auth_headers: dict[str, str],
) -> None:
    assert (await client.get("/users/me", headers=auth_headers)).status_code == 200
    await async_db_session.delete(test_user)
    await async_db_session.commit()
    response = await client.get("/users/me", headers=auth_headers)
    assert response.json() == {"detail": "Invalid token: unknown user"}


# -- the current user --------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "email", "name", "is_admin"),
    [(ALICE, "alice@example.com", "Alice", True), (BOB, "bob@example.com", "Bob", False)],
)
async def test_me_returns_the_sample_user(
    client: AsyncClient, user_id: int, email: str, name: str, is_admin: bool
) -> None:
    response = await client.get("/users/me", headers=bearer(user_id))
    assert response.json() == {
        "id": user_id,
        "email": email,
        "name": name,
        "is_admin": is_admin,
        "is_active": True,
    }


async def test_me_returns_the_test_user(
    client: AsyncClient, test_user: User, auth_headers: dict[str, str]
) -> None:
    response = await client.get("/users/me", headers=auth_headers)
    assert response.status_code == 200
    assert response.json()["email"] == test_user.email
    assert response.json()["id"] == test_user.id


async def test_rename_myself(client: AsyncClient, alice_headers: dict[str, str]) -> None:
    response = await client.patch("/users/me", headers=alice_headers, json={"name": "Alice L."})
    assert response.json()["name"] == "Alice L."
    assert (await client.get("/users/me", headers=alice_headers)).json()["name"] == "Alice L."


async def test_change_my_password(client: AsyncClient, bob_headers: dict[str, str]) -> None:
    response = await client.patch(
        "/users/me", headers=bob_headers, json={"password": "new-bob-pass"}
    )
    assert response.status_code == 200
    old = await client.post(
        "/auth/token", json={"email": "bob@example.com", "password": "bob-password"}
    )
    new = await client.post(
        "/auth/token", json={"email": "bob@example.com", "password": "new-bob-pass"}
    )
    assert (old.status_code, new.status_code) == (401, 200)


@pytest.mark.parametrize("body", [{"name": ""}, {"password": "short"}, {"name": "n" * 101}])
async def test_invalid_profile_changes_are_refused(
    client: AsyncClient, alice_headers: dict[str, str], body: dict[str, str]
) -> None:
    response = await client.patch("/users/me", headers=alice_headers, json=body)
    assert response.status_code == 422
    assert (await client.get("/users/me", headers=alice_headers)).json()["name"] == "Alice"


# -- the security helpers ------------------------------------------------------------


@pytest.mark.parametrize("password", ["correct horse", "p@ss wörd", "x" * 128, "12345678"])
def test_password_hashes_verify_only_their_password(password: str) -> None:
    encoded = hash_password(password)
    assert encoded.startswith("pbkdf2_sha256$")
    assert verify_password(password, encoded)
    assert not verify_password(password + "!", encoded)
    assert hash_password(password) != encoded  # a new salt every time


@pytest.mark.parametrize("encoded", ["", "plain-text", "md5$1$abc$def", "pbkdf2_sha256$1$$"])
def test_foreign_hashes_never_verify(encoded: str) -> None:
    assert not verify_password("anything", encoded)


def test_tokens_round_trip() -> None:
    token = create_access_token(42, now=1_000_000, minutes=5)
    assert decode_token(token, now=1_000_000 + 299) == 42
    with pytest.raises(InvalidToken, match="expired"):
        decode_token(token, now=1_000_000 + 300)
