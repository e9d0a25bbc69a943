"""Passwords (PBKDF2-SHA256) and access tokens (JWT, HS256), with the standard library only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from .settings import get_settings

__all__ = [
    "InvalidToken",
    "create_access_token",
    "decode_token",
    "hash_password",
    "verify_password",
]


class InvalidToken(Exception):
    """The token is malformed, forged, expired or not an access token."""


def hash_password(password: str, *, iterations: int | None = None) -> str:
    """Return ``pbkdf2_sha256$iterations$salt$hash`` for *password*."""
    rounds = iterations or get_settings().password_iterations
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    return f"pbkdf2_sha256${rounds}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Return whether *password* matches the stored hash *encoded*."""
    try:
        algorithm, rounds, salt, expected = encoded.split("$")
    except ValueError:
        return False
    if algorithm != "pbkdf2_sha256":
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(salt), int(rounds))
    return hmac.compare_digest(_b64(digest), expected)


def create_access_token(
    user_id: int,
    *,
    minutes: int | None = None,
    now: float | None = None,
    secret: str | None = None,
) -> str:
    """Return a signed access token for *user_id*."""
    issued = int(now if now is not None else time.time())
    lifetime = get_settings().access_token_minutes if minutes is None else minutes
    payload = {"sub": str(user_id), "iat": issued, "exp": issued + lifetime * 60, "type": "access"}
    return encode(payload, secret or get_settings().jwt_secret)


def decode_token(token: str, *, now: float | None = None, secret: str | None = None) -> int:
    """Return the user id an access token was issued for, or raise InvalidToken."""
    payload = decode(token, secret or get_settings().jwt_secret)
    if payload.get("type") != "access":
        raise InvalidToken("not an access token")
    exp = payload.get("exp")
    if not isinstance(exp, int) or exp <= (now if now is not None else time.time()):
        raise InvalidToken("token expired")
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub.isdigit():
        raise InvalidToken("token has no subject")
    return int(sub)


def encode(payload: dict[str, Any], secret: str) -> str:
    """Return the compact JWS (HS256) of *payload*."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def decode(token: str, secret: str) -> dict[str, Any]:
    """Return the payload of an HS256 token after checking its signature."""
    try:
        header_b64, body_b64, signature_b64 = token.split(".")
        header = json.loads(_unb64(header_b64))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidToken("malformed token") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        # Never accept "none" or an algorithm the client picked.
        raise InvalidToken("unsupported algorithm")
    expected = hmac.new(
        secret.encode(), f"{header_b64}.{body_b64}".encode(), hashlib.sha256
    ).digest()
    try:
        signature = _unb64(signature_b64)
    except ValueError as exc:
        raise InvalidToken("malformed signature") from exc
    if not hmac.compare_digest(signature, expected):
        raise InvalidToken("bad signature")
    try:
        payload = json.loads(_unb64(body_b64))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidToken("malformed payload") from exc
    if not isinstance(payload, dict):
        raise InvalidToken("malformed payload")
    return payload


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("bad base64") from exc
