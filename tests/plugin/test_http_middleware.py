"""sqlsandbox.http without pytest's plugin: the middleware, the header helper, join_token.

The apps here are tiny real ASGI/WSGI callables that report which owner
their code runs as; requests run in an empty ``contextvars.Context``, as a
request in a real server's thread would, so only the header can join them.
The end-to-end tests with real servers and databases are in test_http.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from sqlsandbox import OwnershipError, Sandbox
from sqlsandbox.http import (
    ERROR_HEADER,
    HEADER,
    SandboxMiddleware,
    SandboxWSGIMiddleware,
    find_sandbox,
    join_token,
    owner_headers,
)


@pytest.fixture
def box() -> Iterator[Sandbox]:
    sandbox = Sandbox(name="http-test")
    yield sandbox
    sandbox.close()


class WhoAmI:
    """An ASGI app answering with the name of the owner its code runs as."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        if scope["type"] == "lifespan":
            return
        owner = self.sandbox.current_owner()
        body = (owner.name if owner is not None else "nobody").encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def call_asgi(
    app: Any, headers: dict[str, str] | None = None, scope_type: str = "http"
) -> tuple[list[dict[str, Any]], int | None, bytes]:
    """Make one request in an empty context; return the messages, the status and the body."""
    scope = {
        "type": scope_type,
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    contextvars.Context().run(asyncio.run, app(scope, receive, send))
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent, status, body


def test_the_header_joins_the_owner(box: Sandbox) -> None:
    app = SandboxMiddleware(WhoAmI(box))
    with box.checkout(lazy=True, name="test_a") as owner:
        assert call_asgi(app, {HEADER: owner.token})[1:] == (200, b"test_a")
        # Without the header the request runs as nobody, exactly as the app would.
        assert call_asgi(app)[1:] == (200, b"nobody")


def test_an_unknown_token_gets_an_error_response_without_calling_the_app(box: Sandbox) -> None:
    inner = WhoAmI(box)
    app = SandboxMiddleware(inner, error_status=403)
    with box.checkout(lazy=True, name="test_b"):
        sent, status, body = call_asgi(app, {HEADER: "sqlsandbox-deadbeef"})
    assert status == 403
    assert (ERROR_HEADER.encode(), b"owner-not-found") in sent[0]["headers"]
    assert b"token 'sqlsandbox-deadbeef' in header 'x-sqlsandbox-owner'" in body
    assert inner.calls == 0


def test_a_checked_in_owners_token_is_refused(box: Sandbox) -> None:
    app = SandboxMiddleware(WhoAmI(box))
    owner = box.checkout(lazy=True, name="test_c")
    token = owner.token
    box.checkin(owner)
    _, status, body = call_asgi(app, {HEADER: token})
    assert status == 500
    assert b"the test that made it has ended" in body


def test_the_sandbox_argument_limits_the_search(box: Sandbox) -> None:
    other = Sandbox(name="other")
    try:
        with other.checkout(lazy=True, name="in_other") as owner:
            headers = owner_headers(owner)
            assert call_asgi(SandboxMiddleware(WhoAmI(other)), headers)[2] == b"in_other"
            assert call_asgi(SandboxMiddleware(WhoAmI(other), sandbox=box), headers)[1] == 500
            assert call_asgi(SandboxMiddleware(WhoAmI(other), sandbox=other), headers)[2] == (
                b"in_other"
            )
    finally:
        other.close()


def test_a_custom_header_and_a_token_of_your_choosing(box: Sandbox) -> None:
    app = SandboxMiddleware(WhoAmI(box), header="X-Test-Owner")
    with box.checkout(lazy=True, name="test_d") as owner:
        box.allow(owner, "e2e-run-42")
        assert call_asgi(app, {"x-test-owner": "e2e-run-42"})[1:] == (200, b"test_d")
        assert call_asgi(app, {HEADER: owner.token})[2] == b"nobody"


def test_websocket_with_an_unknown_token_is_closed(box: Sandbox) -> None:
    app = SandboxMiddleware(WhoAmI(box))
    with box.checkout(lazy=True):
        sent, _, _ = call_asgi(app, {HEADER: "sqlsandbox-nope"}, scope_type="websocket")
    assert sent[0]["type"] == "websocket.close"
    assert sent[0]["code"] == 1011
    assert "no active owner has the request's owner token" in sent[0]["reason"]


def test_lifespan_passes_through(box: Sandbox) -> None:
    inner = WhoAmI(box)
    call_asgi(SandboxMiddleware(inner), {HEADER: "sqlsandbox-nope"}, scope_type="lifespan")
    assert inner.calls == 1


def test_without_any_sandbox_the_header_is_ignored(tmp_path: Any) -> None:
    # In production no Sandbox exists: a stray header must not break requests.
    script = textwrap.dedent(
        """
        import asyncio
        from sqlsandbox.http import SandboxMiddleware

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "headers": [(b"x-sqlsandbox-owner", b"sqlsandbox-abc")]}
        asyncio.run(SandboxMiddleware(app)(scope, None, send))
        print(sent[0]["status"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "204"


def test_owner_headers(box: Sandbox) -> None:
    with pytest.raises(OwnershipError, match=r"owner_headers\(\): the calling code owns no"):
        owner_headers()
    with box.checkout(lazy=True) as owner:
        assert owner_headers() == {HEADER: owner.token}
        assert owner_headers(owner, header="x-other") == {"x-other": owner.token}
        assert owner_headers("my-token") == {HEADER: "my-token"}


def test_join_token(box: Sandbox) -> None:
    with join_token(None) as nobody:
        assert nobody is None
    with box.checkout(lazy=True, name="test_e") as owner:
        token = owner.token
        assert find_sandbox(token) is box

        def in_other_context() -> str | None:
            with join_token(token) as joined:
                assert joined is owner
                current = box.current_owner()
                return current.name if current is not None else None

        assert contextvars.Context().run(in_other_context) == "test_e"
    with pytest.raises(OwnershipError, match="no sandbox of this process has an active owner"):
        find_sandbox(token)


class Body:
    """A streamed WSGI body that reports its owner for each chunk and records close()."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(2):
            owner = self.sandbox.current_owner()
            yield (owner.name if owner is not None else "nobody").encode()

    def close(self) -> None:
        self.closed = True


def test_wsgi_body_runs_as_the_owner_and_closes_after_the_owner_ended(box: Sandbox) -> None:
    body = Body(box)
    statuses: list[str] = []

    def app(environ: Any, start_response: Any) -> Body:
        start_response("200 OK", [])
        return body

    wrapped = SandboxWSGIMiddleware(app)
    owner = box.checkout(lazy=True, name="test_f")
    environ = {"HTTP_X_SQLSANDBOX_OWNER": owner.token}
    response = contextvars.Context().run(wrapped, environ, lambda s, h: statuses.append(s))
    chunks = iter(response)
    assert contextvars.Context().run(next, chunks) == b"test_f"
    box.checkin(owner)
    with pytest.raises(OwnershipError, match="the test that made it has ended"):
        next(chunks)
    response.close()  # type: ignore[attr-defined]
    assert body.closed and statuses == ["200 OK"]


def test_wsgi_unknown_token(box: Sandbox) -> None:
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        raise AssertionError("not called")

    with box.checkout(lazy=True):
        body = SandboxWSGIMiddleware(app)(
            {"HTTP_X_SQLSANDBOX_OWNER": "sqlsandbox-nope"},
            lambda status, headers: started.append((status, headers)),
        )
    assert started[0][0] == "500 Internal Server Error"
    assert (ERROR_HEADER, "owner-not-found") in started[0][1]
    assert b"no sandbox of this process has an active owner" in b"".join(body)
