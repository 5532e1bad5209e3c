"""Engines, sessions and migrations.

SQLite (the embedded default) is opened in WAL mode with a busy timeout, because the Dagster run, the sensor
daemon and the CLI are separate processes touching the same file. Schema changes go through Alembic only, so a
SQLite home and a PostgreSQL server always carry the same schema.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 under SQLAlchemy 2.1; we ship psycopg2, so say so explicitly."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def _sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL (``None`` for another database or an in-memory one)."""
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        return None
    path = url.split("sqlite:///", 1)[-1]
    return path if path and path != ":memory:" else None


@lru_cache(maxsize=16)
def get_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        if path := _sqlite_file(url):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    # values_plus_batch: executemany UPDATEs (organise writes tens of thousands of rows at once) go out in
    # psycopg2 pages instead of one round trip per row.
    return create_engine(url, pool_pre_ping=True, executemany_mode="values_plus_batch")


_REVISION = re.compile(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", re.M)
_DOWN = re.compile(r"^down_revision\s*=\s*['\"]([^'\"]+)['\"]", re.M)


def head_revision() -> str | None:
    """The newest migration's id, read from the migration files without importing Alembic (which costs more than
    the whole label command it would precede). ``None`` when the files do not form one line (Alembic decides)."""
    revisions, downs = set(), set()
    for f in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text = f.read_text()
        if m := _REVISION.search(text):
            revisions.add(m.group(1))
        if m := _DOWN.search(text):
            downs.add(m.group(1))
    heads = revisions - downs
    return next(iter(heads)) if len(heads) == 1 else None


def current_revision(url: str) -> str | None:
    """The revision the database is at (``None`` before the first migration)."""
    from sqlalchemy import inspect, text

    with get_engine(url).connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


#: PostgreSQL advisory lock key held while migrating (any fixed 64-bit number; this one spells "facepipe").
_MIGRATION_LOCK = 0x6661636570697065


def upgrade(url: str) -> None:
    """Bring the database to the newest schema (idempotent). A database already at head costs one query.

    Processes that start together after an upgrade of the package (the daemon, a run, a CLI command) all find the
    schema behind; one migrates and the others wait for it, then find nothing to do. Without the lock each ran the
    same step and all but the first failed ("expected to match one row when updating '0004' to '0005'"). The
    lock is a file beside a SQLite database, an advisory lock on PostgreSQL (held to the end of the transaction).

    On SQLite, foreign keys are off while migrating (and checked before the commit): Alembic alters a SQLite table
    by copying it and dropping the old one, and with foreign keys on, that drop deletes the old rows first, which
    cascades (a question's faces) and sets references to NULL (an answer's question), silently."""
    head = head_revision()
    if head is not None and current_revision(url) == head:
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    with _migration_file_lock(url), get_engine(url).connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # off while migrating (docstring): a batch table copy would cascade its deletes
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)" % _MIGRATION_LOCK)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")  # reads the version after the lock: a finished peer leaves nothing to do
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:  # rolled back: a migration that breaks a reference is a bug, never a library's loss
                        raise RuntimeError(f"a migration left {len(broken)} broken references (first: {broken[0]}); nothing was changed")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")  # the pooled connection goes back as it came
                conn.commit()


@contextmanager
def _migration_file_lock(url: str) -> Iterator[None]:
    """An exclusive lock on ``<database>.migrate.lock`` for a SQLite file (nothing for other databases)."""
    path = _sqlite_file(url)
    if path is None:
        yield
        return
    import fcntl

    lock = Path(path + ".migrate.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: committed on success, rolled back on any error."""
    factory = sessionmaker(bind=get_engine(url), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
