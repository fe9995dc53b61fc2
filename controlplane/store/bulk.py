"""Insert many rows in one round trip: PostgreSQL's COPY, an executemany INSERT elsewhere.

A campus scheduling pass writes a hundred thousand allocations in one transaction. An
executemany INSERT sends one statement per row (psycopg pipelines them, but the server still
parses, plans and executes each); COPY streams the rows into the table in one command, with the
same constraints, indexes (the unique index on live allocations included), triggers and
transaction as an INSERT. Values go through each column's own bind processing first, so a
``UTCDateTime`` is stored exactly as an INSERT would store it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, any_, bindparam, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session


def table_of(model: type[Any]) -> Table:
    """A model's table, typed as one."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _insert_of(session: Session) -> Any:
    return postgresql.insert if session.connection().dialect.name == "postgresql" else sqlite.insert


def insert_ignoring(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> None:
    """INSERT ``rows``, skipping any whose ``keys`` columns (a unique key) match a stored row: on
    PostgreSQL and SQLite alike, ``ON CONFLICT (keys) DO NOTHING``."""
    if not rows:
        return
    session.execute(_insert_of(session)(table).on_conflict_do_nothing(index_elements=list(keys)), list(rows))


def add_to(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str], sums: Sequence[str]
) -> None:
    """Upsert ``rows``: a new key is inserted, an existing one has the ``sums`` columns added to
    (``ON CONFLICT (keys) DO UPDATE SET c = c + excluded.c``), on PostgreSQL and SQLite alike."""
    if not rows:
        return
    stmt = _insert_of(session)(table)
    stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_={c: table.c[c] + stmt.excluded[c] for c in sums})
    session.execute(stmt, list(rows))


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys, named after ``table``'s columns) into ``table``."""
    if not rows:
        return
    names = list(rows[0])
    if any(len(row) != len(names) for row in rows):
        raise ValueError(f"rows for {table.name} do not all name the same columns")
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql":
        connection.execute(insert(table), list(rows))
        return
    # COPY knows only server-side defaults: fill in the Python-side ones an INSERT would apply.
    filled = [
        column
        for column in table.columns
        if column.name not in rows[0] and column.default is not None and not column.primary_key
    ]
    defaults = [column.default for column in filled]
    columns = [table.c[name] for name in names] + filled
    processed = [(i, process) for i, c in enumerate(columns) if (process := c.type.bind_processor(dialect))]
    driver = connection.connection.driver_connection
    assert driver is not None
    quoted = ", ".join(dialect.identifier_preparer.quote(column.name) for column in columns)
    statement = f"COPY {dialect.identifier_preparer.format_table(table)} ({quoted}) FROM STDIN"
    dbapi_error = dialect.loaded_dbapi.Error
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                try:
                    values = [row[name] for name in names]
                except KeyError as missing:
                    raise ValueError(f"rows for {table.name} do not all name the same columns") from missing
                values += [_default(default) for default in defaults]
                for i, process in processed:
                    values[i] = process(values[i])
                copy.write_row(values)
    except dbapi_error as exc:
        # As an INSERT would raise it: a unique violation is an IntegrityError the callers catch.
        raise DBAPIError.instance(statement, None, exc, dbapi_error, dialect=dialect) from exc


def _default(default: Any) -> Any:
    """The value of a column's Python-side default (a scalar, or a function of no arguments)."""
    if default.is_scalar:
        return default.arg
    if default.is_callable:
        return default.arg(None)  # SQLAlchemy wraps a no-argument function to take a context
    raise ValueError(f"cannot compute the default {default!r} outside an INSERT")


# SQLite refuses a statement of more than 32,766 bound values; a campus has 30,600 nodes.
_SQLITE_CHUNK = 5000


def among(session: Session, column: Any, values: Sequence[Any]) -> Iterator[ColumnElement[bool]]:
    """``column IN values`` as few statements' conditions as the database takes: one array
    parameter on PostgreSQL (no 30,000-placeholder statement to build and parse), chunks of
    ``IN`` on SQLite. A caller runs its statement once per condition."""
    if session.connection().dialect.name == "postgresql":
        yield column == any_(bindparam("among_values", list(values), type_=ARRAY(column.type)))
        return
    for start in range(0, len(values), _SQLITE_CHUNK):
        yield column.in_(values[start : start + _SQLITE_CHUNK])
