"""Opening the database: SQLite (WAL, a busy timeout, foreign keys) or any SQLAlchemy URL.

``MITOSIS_DATABASE_URL`` picks it (PostgreSQL for a shared deployment). :func:`open_store`
brings the database to the newest schema first, with the migrations under
``store/migrations`` (Alembic): a new database is created at the newest version; one written
before the project used Alembic (version 1 and its successors) is taken to be version 1 and
upgraded in place, keeping every row. Writing a new migration is in ``docs/operations.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, inspect, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import sessionmaker

from store.errors import StoreUnavailable
from store.schema import Base

MIGRATIONS = Path(__file__).with_name("migrations")
BEFORE_ALEMBIC = "0001"  # the revision that is the schema of version 1
_LOCK_KEY = 7_240_531  # PostgreSQL advisory lock: one process migrates at a time

log = logging.getLogger("store")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # the wait first: a new connection meets other processes' locks at its first statement
    # (a worker started beside one that is migrating or writing failed 'database is locked')
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_store(url: str) -> sessionmaker:
    """A session factory on ``url``, whose database is at the newest schema version.

    A URL that names no database, a driver that is not installed or a server that does not
    answer is :class:`StoreUnavailable`, with what to check (and never the password).
    """
    try:
        shown = shown_url(url)
    except ArgumentError as e:
        raise StoreUnavailable(
            "MITOSIS_DATABASE_URL is not a database URL. Use sqlite:////ABSOLUTE/PATH.db or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB."
        ) from e
    try:
        engine: Engine = create_engine(url, future=True)  # loads the driver; connects later
    except ArgumentError as e:  # a dialect SQLAlchemy does not know, e.g. postgres://
        raise StoreUnavailable(
            f"MITOSIS_DATABASE_URL names a database SQLAlchemy does not know: {shown}. Use "
            "sqlite:////ABSOLUTE/PATH.db or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB."
        ) from e
    except ModuleNotFoundError as e:  # e.g. mysql://: a driver this project does not ship
        raise StoreUnavailable(
            f"The database driver of {shown} is not installed ({e}); the project runs on "
            "SQLite and on PostgreSQL (postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB)."
        ) from e
    try:
        migrate(url)
    except OperationalError as e:
        reason = str(e.orig or e).strip().splitlines()[0]
        folder = Path(engine.url.database or ".").parent
        if engine.dialect.name == "sqlite" and not folder.is_dir():
            raise StoreUnavailable(
                f"Cannot open the database at {shown}: the folder {folder} does not exist. "
                "The default database lives in MITOSIS_DATA_DIR, which `python -m "
                "evaluation.release` creates with the release in it; or correct "
                "MITOSIS_DATA_DIR or MITOSIS_DATABASE_URL."
            ) from e
        check = (
            "that its folder exists and is writable"
            if engine.dialect.name == "sqlite"
            else "that the server is running and accepts this user"
        )
        raise StoreUnavailable(
            f"Cannot open the database at {shown}: {reason}. Check {check}, and "
            "MITOSIS_DATABASE_URL."
        ) from e
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return sessionmaker(engine, expire_on_commit=False)


def shown_url(url: str) -> str:
    """``url`` as messages and logs show it: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for this project's migrations, on ``connection`` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(url: str) -> None:
    """Create the schema at the newest version, or upgrade an older database in place.

    One process migrates at a time and the whole migration is one transaction: on SQLite a
    ``BEGIN IMMEDIATE`` (with foreign keys off, as copying a table to alter it needs), on
    PostgreSQL an advisory lock. A process that waited finds the database already done.
    """
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_migration_connection)
        event.listen(
            engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE")
        )
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            config = alembic_config(connection)
            tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
            if not tables:
                Base.metadata.create_all(connection)
                command.stamp(config, "head")
                return
            if not inspect(connection).has_table("alembic_version"):
                command.stamp(config, BEFORE_ALEMBIC)
            before = MigrationContext.configure(connection).get_current_revision()
            command.upgrade(config, "head")
            after = MigrationContext.configure(connection).get_current_revision()
            if after != before:
                log.info("upgraded the database %s from %s to %s", shown_url(url), before, after)
            if connection.dialect.name == "sqlite":  # the copies ran with foreign keys off
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"Migrating {url} broke references: {broken[:5]}")
    finally:
        engine.dispose()


def _sqlite_migration_connection(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # the "begin" event emits BEGIN IMMEDIATE itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=600000")  # another process may be migrating a big file
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.close()
