"""Tests of the ownership layer, against real PostgreSQL, SQLite and MariaDB."""
