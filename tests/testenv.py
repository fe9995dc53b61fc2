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


def empty_tables(target: object) -> None:
    """Remove every row of every table of a migrated database (a URL or an engine), the
    append-only audit log included: what each storage test starts from.

    The audit log's triggers refuse UPDATE, DELETE and TRUNCATE (that is their point): this is
    the tests' way round them, as the tables' owner would do it, never the product's: on
    PostgreSQL the triggers are disabled and enabled again inside this one transaction, on SQLite
    dropped and created again in it.
    """
    from sqlalchemy import text
    from sqlalchemy.engine import Engine

    from controlplane.store.db import make_engine
    from controlplane.store.models import Base

    engine = make_engine(target) if isinstance(target, str) else target
    assert isinstance(engine, Engine)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                guarded = conn.execute(
                    text("SELECT DISTINCT tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal")
                )
                guarded_tables = [row[0] for row in guarded]
                for table in guarded_tables:
                    conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
                for table in guarded_tables:
                    conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
                return
            triggers = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
            for name, _ in triggers:
                conn.execute(text(f'DROP TRIGGER "{name}"'))
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
            for _, sql in triggers:
                conn.execute(text(sql))
    finally:
        if isinstance(target, str):
            engine.dispose()
