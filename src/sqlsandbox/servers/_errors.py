"""Turn driver errors into one clear sqlsandbox error that never shows a password."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import quote

from .._exceptions import ConfigError, ProvisioningError

if TYPE_CHECKING:
    from .._urls import DatabaseURL

__all__ = [
    "URL_HINT",
    "cause_fix",
    "connect_error",
    "driver_detail",
    "operation_error",
    "scrub",
    "scrub_urls",
    "wrong_backend",
]

URL_HINT = "--sqlsandbox-url / SQLSANDBOX_URL"

_UNREACHABLE = re.compile(
    r"refused|no such file|resolve|name or service|timeout|timed out|can't connect|"
    r"unknown mysql server host|no route|unreachable|network|server closed",
    re.IGNORECASE,
)
_CREDENTIALS = re.compile(
    r"password|authentication|access denied|role \".*\" does not exist|not permitted to log in",
    re.IGNORECASE,
)
_MISSING_DATABASE = re.compile(r"database .* does not exist|unknown database", re.IGNORECASE)
# A reachable server that went away mid-statement: restart, shutdown, killed session.
_SERVER_GONE = re.compile(
    r"server closed the connection|terminating connection|connection was killed|"
    r"lost connection|gone away|shutting down|shutdown in progress|the connection is closed|"
    r"connection (?:was )?reset|broken pipe|connection refused",
    re.IGNORECASE,
)
_PERMISSION = re.compile(
    r"permission denied|access denied|command denied|must be (?:a )?(?:superuser|owner|member)|"
    r"insufficient privilege|only roles with",
    re.IGNORECASE,
)


# The password of any URL written out in a text: ``scheme://user:password@``.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def scrub_urls(text: str) -> str:
    """Return *text* with the password of every URL written out in it replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def scrub(text: str, url: DatabaseURL) -> str:
    """Return *text* with the URL's password (raw or URL-quoted) replaced by ``***``.

    Passwords of other URLs written out in the text are masked too. Only driver
    text goes through here: our own text shows the masked URL, which a short
    password would otherwise mangle.
    """
    text = scrub_urls(text)
    password = url.password
    if password:
        for form in {password, quote(password, safe="")}:
            text = text.replace(form, "***")
    return text


def driver_detail(exc: BaseException, url: DatabaseURL) -> str:
    """Return the first meaningful line of a driver error, without the password."""
    args: tuple[object, ...] = exc.args
    # PyMySQL errors carry (code, message); show the message.
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = args[1]
    else:
        text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    line = line.removeprefix("connection failed: ").removeprefix("connection is bad: ")
    line = re.sub(r"\bFATAL:\s+", "", line)
    return scrub(line, url)


def connect_error(engine: str, url: DatabaseURL, exc: BaseException) -> ProvisioningError:
    """Build the error for a failed admin connection, with the fix that fits its cause."""
    detail = driver_detail(exc, url)
    if _CREDENTIALS.search(detail):
        fix = f"Check the user name and password in {URL_HINT}."
    elif _MISSING_DATABASE.search(detail):
        fix = (
            "Create that database or name an existing one in the URL path "
            f"(for example /{'postgres' if engine == 'PostgreSQL' else 'mysql'}) "
            f"in {URL_HINT}."
        )
    elif _UNREACHABLE.search(detail):
        fix = (
            f"Is the server running? Check the host and port, or set {URL_HINT} "
            "(leave it unset to use the embedded PostgreSQL)."
        )
    else:
        fix = f"Check the server and {URL_HINT}."
    return ProvisioningError(f"Cannot connect to {engine} at {url.masked()}: {detail}. {fix}")


def cause_fix(
    detail: str, url: DatabaseURL, *, action: str, privilege: str = "", fallback: str = ""
) -> str:
    """Return the fix for a failed statement, chosen by the cause the driver *detail* shows.

    *privilege* names what the action needs (``"CREATEDB (ALTER ROLE ...)"``),
    for the case the server refused it to the URL's user; *fallback* is the
    fix when the detail shows no known cause.
    """
    if _SERVER_GONE.search(detail):
        return (
            "The server closed the connection: is it still running (it may have been "
            "restarted or shut down, or an admin ended the session)? Check the server, "
            f"then run again, or point {URL_HINT} at a running one."
        )
    user = repr(url.username) if url.username else "the URL's user"
    if _PERMISSION.search(detail):
        needed = privilege or f"the privilege to {action}"
        return (
            f"User {user} lacks a privilege this needs: {needed}. Grant it, or use a user "
            f"that has it in {URL_HINT}."
        )
    if fallback:
        return fallback
    if action.startswith("run SQL"):
        return "The server rejected the SQL: fix the statement (the detail above says why)."
    return (
        f"The server refused to {action}: check that {user} may do so and that the server "
        "is healthy (its log says more)."
    )


def operation_error(
    action: str,
    url: DatabaseURL,
    exc: BaseException,
    fix: str = "",
    *,
    privilege: str = "",
) -> ProvisioningError:
    """Build the error for an admin statement that failed on a reachable server.

    Without a *fix* of the caller's, the fix follows the cause (see :func:`cause_fix`).
    """
    detail = driver_detail(exc, url).rstrip(".")
    fix = fix or cause_fix(detail, url, action=action, privilege=privilege)
    return ProvisioningError(f"Could not {action} on {url.masked()}: {detail}. {fix}")


def wrong_backend(cls_name: str, url: DatabaseURL, expected: str) -> ConfigError:
    """Build the error for a URL handed to the backend class of another engine."""
    return ConfigError(
        f"{cls_name} cannot serve {url.masked()}: expected a {expected} URL. "
        f"Use connect_server() to pick the backend from the scheme, or fix {URL_HINT}."
    )
