"""Alembic driven from code, so `switchyard db upgrade` needs no alembic.ini on disk."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


class SchemaNotCurrent(RuntimeError):
    """The database is missing migrations; the message says which command fixes it."""


def check_current(engine: Engine) -> None:
    """Refuse to run against a database whose schema is not at the newest migration."""
    script = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(hide_password=False)))
    head = script.get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        raise SchemaNotCurrent(
            f"the database at {where} is at schema revision {current or 'none'}, not {head}: "
            "run `switchyard db upgrade`"
        )
