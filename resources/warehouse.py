"""The Postgres warehouse as a Dagster resource: where SQL readers find documents, predictions
and aggregates (tables and views in `nlp_assets/warehouse/schema.sql`).

The connection URL is a secret: give it as `dg.EnvVar("DATABASE_URL")` (Dagster never logs an
EnvVar's value). TLS is configuration: `sslmode=verify-full&sslrootcert=...` in the URL, the
fields below, or libpq's own `PGSSLMODE` / `PGSSLROOTCERT` environment variables.
"""

from __future__ import annotations

import os
import re
from typing import Any

import dagster as dg
from pydantic import Field

#: What the warehouse assets say when there is no database to write to.
NOT_CONFIGURED = (
    "warehouse not configured: set DATABASE_URL (postgresql://user:password@host:port/db) to "
    "write documents, predictions and aggregates to Postgres; the Parquet lake has them anyway"
)

_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*)(?P<password>:[^@\s]*)?@", re.I
)


def redact_url(text: str, *, keep_user: bool = False) -> str:
    """`text` with the credentials of every URL in it replaced by '***', safe for logs (the one
    redaction of this package): `redis://user:secret@host` -> `redis://***@host`; with
    `keep_user`, only the password goes (`postgresql://user:***@host/db`) and a URL without
    one is left as it is."""

    def redact(match: re.Match[str]) -> str:
        if not keep_user:
            return f"{match['scheme']}***@"
        if match["password"] is None:
            return match[0]
        return f"{match['scheme']}{match['user']}:***@"

    return _URL_CREDENTIALS.sub(redact, text)


class WarehouseResource(dg.ConfigurableResource):
    """A Postgres database for the warehouse tables; unset URL = not configured (lake only)."""

    database_url: str | None = Field(
        default=None,
        description="libpq URL of the warehouse database; set it from the DATABASE_URL "
        "environment variable (EnvVar), never literally. None: the warehouse is off.",
    )
    schema_name: str = Field(default="nlp", description="Postgres schema of tables and views.")
    sslmode: str | None = Field(
        default=None,
        description="libpq sslmode (disable, require, verify-ca, verify-full); None: the URL's "
        "or PGSSLMODE.",
    )
    sslrootcert: str | None = Field(
        default=None, description="CA certificate file for verify-ca / verify-full."
    )
    connect_timeout_s: int = Field(default=10, description="libpq connect_timeout (seconds).")

    @property
    def configured(self) -> bool:
        return bool(self.database_url)

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "connect_timeout": self.connect_timeout_s,
            "application_name": "nlp_assets_warehouse",
        }
        if self.sslmode:
            kwargs["sslmode"] = self.sslmode
        if self.sslrootcert:
            kwargs["sslrootcert"] = self.sslrootcert
        return kwargs

    def connect(self):
        """A new psycopg2 connection (the caller closes it); errors never echo the URL."""
        import psycopg2

        if not self.database_url:
            raise dg.Failure(description=NOT_CONFIGURED, allow_retries=False)
        try:
            return psycopg2.connect(self.database_url, **self.connect_kwargs())
        except psycopg2.Error as error:
            # libpq messages name host and port, not the password; redact anyway.
            reason = redact_url(str(error), keep_user=True).strip()
            raise ConnectionError(f"cannot connect to the warehouse database: {reason}") from None


def warehouse_from_env() -> WarehouseResource:
    """`DATABASE_URL` as an EnvVar when it is set (the value stays out of Dagster's records);
    otherwise a warehouse that is off. The schema is the environment's (`NLP_WAREHOUSE_SCHEMA`,
    else nlp, nlp_staging or nlp_prod: docs/environments.md)."""
    from nlp_assets import settings

    schema = settings.environment().warehouse_schema
    if os.getenv("DATABASE_URL"):
        return WarehouseResource(database_url=dg.EnvVar("DATABASE_URL"), schema_name=schema)
    return WarehouseResource(schema_name=schema)
