"""Where the tests' real services are, and a helper to make a fresh PostgreSQL database."""

from __future__ import annotations

import os

PG_ADMIN_URL = os.environ.get("SWITCHYARD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SWITCHYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PEPPER = "test-pepper-not-a-secret-0123456789"


def pg_database(name: str, *, drop: bool) -> str:
    """Create (or, with drop, remove) a database on the test server; returns its URL."""
    import psycopg

    base = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + f"/{name}"


def empty_tables(engine: object) -> None:
    """Remove every row of every table, the append-only audit log included.

    The audit log's triggers refuse UPDATE, DELETE and TRUNCATE (that is their point): this is
    the tests' way round them, as the database's owner would do it, never the product's. On
    PostgreSQL, ``session_replication_role = replica`` skips user triggers for this transaction
    only; on SQLite the triggers are dropped and created again in the same transaction.
    """
    from sqlalchemy import text
    from sqlalchemy.engine import Engine

    from controlplane.store.models import Base

    assert isinstance(engine, Engine)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            return
        triggers = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
        for name, _ in triggers:
            conn.execute(text(f'DROP TRIGGER "{name}"'))
        for table in tables:
            conn.execute(text(f"DELETE FROM {table}"))
        for _, sql in triggers:
            conn.execute(text(sql))
