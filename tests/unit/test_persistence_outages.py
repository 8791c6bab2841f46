"""Which database errors persistence waits out, and which it treats as bad data."""

from __future__ import annotations

import asyncpg
import pytest

from rrr.persistence.handlers import _unavailable


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
        asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.DiskFullError("no space left"),
        asyncpg.exceptions.SerializationError("could not serialize"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"),
    ],
)
def test_lost_connections_and_exhausted_resources_count_as_an_outage(exc: BaseException) -> None:
    assert _unavailable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.NumericValueOutOfRangeError("out of range"),
        asyncpg.exceptions.UniqueViolationError("duplicate"),
        asyncpg.exceptions.RaiseError("refusing poison"),
        asyncpg.exceptions.UndefinedTableError("no table"),
    ],
)
def test_errors_about_the_data_or_the_schema_are_not_an_outage(exc: BaseException) -> None:
    assert not _unavailable(exc)
