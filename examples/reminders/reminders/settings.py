"""Settings read from the environment once, when the app is imported."""

from __future__ import annotations

import dataclasses
import functools
import os
import re

_SCHEME = re.compile(r"^(postgres|postgresql)(\+\w+)?://")


def with_driver(url: str, driver: str) -> str:
    """Return *url* with the PostgreSQL *driver* (``postgres://`` URLs from PaaS dashboards too)."""
    return _SCHEME.sub(f"postgresql+{driver}://", url, count=1)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the app reads from its environment."""

    database_url: str
    sync_database_url: str
    jwt_secret: str
    access_token_minutes: int
    password_iterations: int
    notification_workers: int
    event_cleanup_interval: float
    processed_event_max_age: float

    @classmethod
    def from_env(cls, env: os._Environ[str] | dict[str, str] = os.environ) -> Settings:
        """Read the settings from *env* (the process environment by default).

        ``DATABASE_URL`` may name any PostgreSQL driver (or none): the app
        talks asyncpg on it, and psycopg on ``SYNC_DATABASE_URL`` (default:
        the same database).
        """
        database_url = env.get(
            "DATABASE_URL", "postgresql://reminders:reminders@localhost/reminders"
        )
        return cls(
            database_url=with_driver(database_url, "asyncpg"),
            sync_database_url=with_driver(env.get("SYNC_DATABASE_URL", database_url), "psycopg"),
            jwt_secret=env.get("JWT_SECRET", "change-me-in-production"),
            access_token_minutes=int(env.get("ACCESS_TOKEN_MINUTES", "30")),
            password_iterations=int(env.get("PASSWORD_ITERATIONS", "240000")),
            notification_workers=int(env.get("NOTIFICATION_WORKERS", "3")),
            event_cleanup_interval=float(env.get("EVENT_CLEANUP_INTERVAL", "300")),
            processed_event_max_age=float(env.get("PROCESSED_EVENT_MAX_AGE", "3600")),
        )


@functools.cache
def get_settings() -> Settings:
    """Return the settings, read from the environment on first use (then cached)."""
    return Settings.from_env()
