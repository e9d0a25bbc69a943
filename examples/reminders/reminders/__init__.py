"""Reminders: a FastAPI + async SQLAlchemy app shaped like the ones real teams test.

Engines are built at import time from ``DATABASE_URL`` (asyncpg) and
``SYNC_DATABASE_URL`` (psycopg); the schema comes from Alembic migrations only.
"""
