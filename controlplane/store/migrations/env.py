"""Alembic environment: runs migrations on the engine our own factory builds."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import event

from controlplane.store.db import make_engine
from controlplane.store.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url is not set"

engine = make_engine(url)
if engine.dialect.name == "sqlite":
    # SQLite alters a table by copying it and dropping the old one; with foreign keys enforced,
    # that drop would cascade into every table referencing it. Off for migrations (after the
    # engine's own connect hook turned them on), and checked once the migration is done.
    @event.listens_for(engine, "connect")
    def _no_foreign_keys(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=OFF")
        cur.close()


with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
    if engine.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"the migration left rows pointing at nothing: {broken[:5]}")
engine.dispose()
