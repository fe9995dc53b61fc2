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


def empty_tables(url: str) -> None:
    """Every table of a migrated database emptied (what each storage test starts from)."""
    from sqlalchemy import text

    from controlplane.store.db import make_engine
    from controlplane.store.models import Base

    engine = make_engine(url)
    with engine.begin() as conn:
        tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()
