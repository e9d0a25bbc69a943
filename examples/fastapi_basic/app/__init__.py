"""A shop's item catalogue: FastAPI, SQLAlchemy 2 and PostgreSQL."""
