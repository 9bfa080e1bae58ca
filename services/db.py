"""Engine, session factory and the unit of work. The transaction boundary lives here:
a request or a task opens one unit of work, services only flush."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import DateTime, Engine, Executable, MetaData, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from services.config import get_settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The API and the worker are separate processes on one SQLite file: WAL lets readers
    # proceed during a write and busy_timeout makes writers queue instead of failing.
    # pysqlite's own transaction handling breaks SAVEPOINTs and keeps locks past COMMIT;
    # switch it off and let SQLAlchemy emit BEGIN itself (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock at BEGIN, so two processes never deadlock upgrading a
    # read transaction to a write one (every request writes an audit row); they queue on
    # busy_timeout instead. The embedded default serves one laptop, not a clinic.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


# Connections kept per process by the engine of the hot analysis reads (``get_statement_engine``).
# Reads in threads beyond this many would open and close overflow connections per request (a
# PostgreSQL backend forked each time), so those reads are throttled to it and wait on the
# event loop instead.
READ_POOL_SIZE = 8


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    # hide_parameters: an error names the statement, never the values (patient ids, the
    # rows of a file, a receiver's answer), so that logs carry no patient data.
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False},
            hide_parameters=True,
            **({} if pooled else {"poolclass": NullPool}),
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if not pooled:
        return create_engine(
            url, poolclass=NullPool, connect_args={"connect_timeout": 5}, hide_parameters=True
        )
    return create_engine(
        url,
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        pool_timeout=5,
        connect_args={"connect_timeout": 5},
    )


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    settings = get_settings()
    if settings.embedded_database:
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.sqlalchemy_url)


@lru_cache(maxsize=1)
def get_statement_engine() -> Engine | None:
    """PostgreSQL only: an engine whose connections commit each statement by itself, for work
    that is one statement (the hot analysis reads write their audit row in the statement that
    reads the body). One round trip per read instead of a ping, BEGIN, the statement and
    COMMIT, with the same durability: the statement's commit is synchronous before the answer
    leaves. No pre-ping: a connection that died with a PostgreSQL restart fails its statement,
    which invalidates the whole pool, and the caller runs it again once (``run_statement``).
    None on the embedded SQLite default, which uses ``unit_of_work``."""
    settings = get_settings()
    if settings.embedded_database:
        return None
    return create_engine(
        settings.sqlalchemy_url,
        isolation_level="AUTOCOMMIT",
        hide_parameters=True,
        pool_size=READ_POOL_SIZE,
        max_overflow=0,
        pool_timeout=5,
        connect_args={"connect_timeout": 5},
    )


def run_statement(
    engine: Engine, statement: Executable, parameters: Mapping[str, object]
) -> Sequence[Any] | None:
    """The first row of one autocommitted statement on ``get_statement_engine()``, run a second
    time if the connection turned out dead (a restarted server: the pool is invalidated by the
    first failure, so the second attempt connects afresh)."""
    for attempt in (1, 2):
        try:
            with engine.connect() as connection:
                return connection.execute(statement, parameters).first()
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable")


@lru_cache(maxsize=1)
def get_session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def unit_of_work(factory: Callable[[], Session] | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error, always close."""
    session = (factory or get_session_factory())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
