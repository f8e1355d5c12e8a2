"""Persistence on SQLAlchemy 2 (async): SQLite (WAL) by default, PostgreSQL by URL."""
