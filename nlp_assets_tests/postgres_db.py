"""A throwaway database on the real Postgres (127.0.0.1, or PG_TEST_ADMIN_URL) for a test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

ADMIN_URL = os.getenv("PG_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def admin_connection():
    try:
        conn = psycopg2.connect(ADMIN_URL, connect_timeout=5)
    except psycopg2.OperationalError as error:  # a postgres test fails, never skips
        raise RuntimeError(
            f"Postgres is not reachable at {urlsplit(ADMIN_URL).netloc.rpartition('@')[2]} "
            f"(PG_TEST_ADMIN_URL): {error}".strip()
        ) from None
    conn.autocommit = True
    return conn


def url_for(database: str, *, password: str | None = None) -> str:
    """ADMIN_URL pointed at `database`, with `password` in it when given."""
    parts = urlsplit(ADMIN_URL)
    user_host = parts.netloc
    if password is not None:
        user, _, host = user_host.rpartition("@")
        user_host = f"{user.split(':')[0]}:{password}@{host}"
    return urlunsplit((parts.scheme, user_host, f"/{database}", parts.query, ""))


@contextmanager
def temp_database(prefix: str) -> Iterator[str]:
    """Create a uniquely named database, yield its name, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = admin_connection()
    try:
        admin.cursor().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield name
    finally:
        admin.cursor().execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.close()
