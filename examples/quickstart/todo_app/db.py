"""The app's engine and session factory, built at import time from DATABASE_URL."""

from __future__ import annotations

import os

from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql+psycopg://todo@localhost:5432/todo")
if DATABASE_URL.startswith("postgresql://"):
    # Hosting platforms hand out URLs without a driver; this app uses psycopg 3.
    DATABASE_URL = "postgresql+psycopg://" + DATABASE_URL.removeprefix("postgresql://")

engine = create_engine(DATABASE_URL)
SessionLocal = sessionmaker(engine, expire_on_commit=False)
