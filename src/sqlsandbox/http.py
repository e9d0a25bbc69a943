"""Let HTTP requests run as a test's owner: ASGI and WSGI middleware, and the header.

A request served by a real server (uvicorn in a thread, a WSGI server, any
code that does not inherit the test's context) carries the test's owner
token in a header; the middleware finds the sandbox that issued it and runs
the request inside ``sandbox.join(token)``, so the app's queries use the
test's connection and are rolled back with it. In the spirit of
Phoenix.Ecto.SQL.Sandbox::

    from sqlsandbox.http import SandboxMiddleware, owner_headers

    app = SandboxMiddleware(app)                      # ASGI: FastAPI, Starlette, Litestar
    wsgi_app = SandboxWSGIMiddleware(flask_app)       # WSGI: Flask, Django, ...
    httpx.get(url, headers=owner_headers(owner))      # in the test

Requests without the header pass through untouched, and so does every
request in a process with no Sandbox at all (production), so the middleware
may stay in the app. In pytest, the ``sandbox_headers`` fixture gives the
header of the current test. See ``docs/recipes/http.md``.

This module imports no web framework: the middleware are plain ASGI and
WSGI callables.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from ._exceptions import DOCS, OwnershipError
from .ownership import _registry

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from .ownership import Owner, Sandbox

__all__ = [
    "ERROR_HEADER",
    "HEADER",
    "SandboxMiddleware",
    "SandboxWSGIMiddleware",
    "find_sandbox",
    "join_token",
    "owner_headers",
]

#: The request header that carries the owner token.
HEADER = "x-sqlsandbox-owner"

#: Set on the error response the middleware sends for a token it cannot join.
ERROR_HEADER = "x-sqlsandbox-error"

_DOCS_PAGE = f"{DOCS}/recipes/http/"
_WEBSOCKET_REASON = "sqlsandbox: no active owner has the request's owner token (see the server log)"
_log = logging.getLogger("sqlsandbox.http")

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


def owner_headers(owner: Owner | str | None = None, *, header: str = HEADER) -> dict[str, str]:
    """Return the header that makes a request to a middleware-wrapped app run as *owner*.

    *owner* is an Owner handle or its token; None means the owner of the
    calling code (the current test, in pytest: or use the ``sandbox_headers``
    fixture).
    """
    if isinstance(owner, str):
        return {header: owner}
    if owner is None:
        owners = (s.current_owner() for s in _registry.live_sandboxes())
        owner = next((o for o in owners if o is not None), None)
        if owner is None:
            raise OwnershipError(
                "owner_headers(): the calling code owns no sandboxed connection and is not "
                "allowed to use one, so there is no owner to put in the header. Call it from "
                "the test (in pytest: use the `sandbox_headers` fixture), or pass the Owner "
                f"handle or its token: owner_headers(owner). See {_DOCS_PAGE}"
            )
    return {header: owner.token}


def _unknown_token(token: str, header: str | None) -> OwnershipError:
    where = f" in header {header!r}" if header else ""
    return OwnershipError(
        f"The request carries sqlsandbox owner token {token[:24]!r}{where}, but no sandbox "
        "of this process has an active owner with that token. Either the test that made it "
        "has ended (checked in, or its ownership timeout expired): finish the test's "
        "requests, and the server's background work, before the test ends. Or the token "
        "comes from another process: a server running in a subprocess cannot join a "
        'test\'s transaction, so give that test @pytest.mark.sandbox(isolation="database") '
        "and point the server at `db_url`, "
        f"without the header. See {_DOCS_PAGE}#errors"
    )


def find_sandbox(token: str, *, sandbox: Sandbox | None = None) -> Sandbox:
    """Return the sandbox with an active owner behind *token*; raise OwnershipError if none.

    With *sandbox*, only that one is searched.
    """
    found = _registry.sandbox_for_token(token, None if sandbox is None else [sandbox])
    if found is None:
        raise _unknown_token(token, None)
    return found


@contextlib.contextmanager
def join_token(token: str | None, *, sandbox: Sandbox | None = None) -> Iterator[Owner | None]:
    """Run the block as the owner behind *token*, whichever sandbox issued it.

    The building block for other frameworks' middleware. None (no header)
    runs the block as it is, and yields None.
    """
    if token is None:
        yield None
        return
    with find_sandbox(token, sandbox=sandbox).join(token) as owner:
        yield owner


class _Join:
    """What both middleware share: which token, which sandbox, which error."""

    def __init__(self, header: str, sandbox: Sandbox | None, error_status: int) -> None:
        self.header = header.lower()
        self.sandbox = sandbox
        self.error_status = error_status

    def resolve(self, token: str) -> Sandbox | None:
        """Return the sandbox to join, None to pass the request through, or raise."""
        if self.sandbox is None and not _registry.live_sandboxes():
            # No sandbox in this process (production): the header means nothing here.
            return None
        found = _registry.sandbox_for_token(token, None if self.sandbox is None else [self.sandbox])
        if found is None:
            raise _unknown_token(token, self.header)
        return found

    def enter(self, token: str | None) -> contextlib.ExitStack | None:
        """Join the owner behind *token*; None when there is nothing to join."""
        if not token:
            return None
        sandbox = self.resolve(token)
        if sandbox is None:
            return None
        stack = contextlib.ExitStack()
        stack.enter_context(sandbox.join(token))
        return stack

    def reject(self, error: OwnershipError) -> tuple[str, bytes]:
        """Log *error* (a live server shows it in its log) and return the response body."""
        message = str(error)
        _log.error("%s", message)
        return "text/plain; charset=utf-8", message.encode()


class SandboxMiddleware:
    """ASGI middleware: run requests that carry an owner token as that owner.

    Wrap any ASGI app (``SandboxMiddleware(app)``), or add it the
    framework's way (``app.add_middleware(SandboxMiddleware)`` in
    Starlette/FastAPI, ``middleware=[SandboxMiddleware]`` in Litestar).

    Args:
        app: the ASGI app.
        sandbox: join owners of this sandbox only; default: whichever live
            sandbox of this process issued the token.
        header: the request header with the token.
        error_status: HTTP status of the response to a token no active owner
            has (its body is the OwnershipError message).
    """

    def __init__(
        self,
        app: _ASGIApp,
        *,
        sandbox: Sandbox | None = None,
        header: str = HEADER,
        error_status: int = 500,
    ) -> None:
        self.app = app
        self._join = _Join(header, sandbox, error_status)
        self._header = self._join.header.encode("latin-1")

    def _token(self, scope: _Scope) -> str | None:
        for name, value in scope.get("headers") or ():
            if name == self._header:
                return bytes(value).decode("latin-1").strip()
        return None

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            joined = self._join.enter(self._token(scope))
        except OwnershipError as error:
            await self._reject(scope, send, error)
            return
        if joined is None:
            await self.app(scope, receive, send)
            return
        with joined:
            await self.app(scope, receive, send)

    async def _reject(self, scope: _Scope, send: _Send, error: OwnershipError) -> None:
        content_type, body = self._join.reject(error)
        if scope["type"] == "websocket":
            # 1011: the server met a condition that kept it from serving the request.
            # A close reason holds 123 bytes at most: the whole message is in the log.
            await send({"type": "websocket.close", "code": 1011, "reason": _WEBSOCKET_REASON})
            return
        await send(
            {
                "type": "http.response.start",
                "status": self._join.error_status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (ERROR_HEADER.encode(), b"owner-not-found"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class SandboxWSGIMiddleware:
    """WSGI middleware: run requests that carry an owner token as that owner.

    ``app.wsgi_app = SandboxWSGIMiddleware(app.wsgi_app)`` for Flask, or wrap
    any WSGI callable. A streamed response body is produced as the owner too.
    Arguments as for :class:`SandboxMiddleware`.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        sandbox: Sandbox | None = None,
        header: str = HEADER,
        error_status: int = 500,
    ) -> None:
        self.app = app
        self._join = _Join(header, sandbox, error_status)
        self._environ_key = "HTTP_" + self._join.header.upper().replace("-", "_")

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        value = environ.get(self._environ_key)
        token = value.strip() if isinstance(value, str) else None
        try:
            joined = self._join.enter(token)
        except OwnershipError as error:
            content_type, body = self._join.reject(error)
            status = self._join.error_status
            start_response(
                f"{status} {_reason(status)}",
                [
                    ("Content-Type", content_type),
                    ("Content-Length", str(len(body))),
                    (ERROR_HEADER, "owner-not-found"),
                ],
            )
            return [body]
        if joined is None:
            return self.app(environ, start_response)
        assert token is not None
        with joined:
            result = self.app(environ, start_response)
        if isinstance(result, list | tuple):
            return result
        # The server iterates the body after we return, maybe in another context:
        # join again around each step instead of leaving the owner set on its thread.
        return _JoinedBody(result, self._join, token)


class _JoinedBody:
    """A WSGI response body whose iteration and close() run as the request's owner."""

    def __init__(self, body: Iterable[bytes], join: _Join, token: str) -> None:
        self._body = body
        self._iter: Iterator[bytes] | None = None
        self._join = join
        self._token = token

    def __iter__(self) -> Iterator[bytes]:
        return self

    def _joined(self) -> contextlib.AbstractContextManager[object]:
        joined = self._join.enter(self._token)
        return joined if joined is not None else contextlib.nullcontext()

    def __next__(self) -> bytes:
        with self._joined():
            if self._iter is None:
                self._iter = iter(self._body)
            return next(self._iter)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is None:
            return
        try:
            joined = self._joined()
        except OwnershipError:
            # The owner is gone; the body must still be closed.
            close()
            return
        with joined:
            close()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
