"""API keys: a random token shown once, stored only as its sha256.

A token reads ``nlp_<key id>_<secret>``; the key id is public (it names the key in lists, logs
and revocations), the secret is 32 random bytes. The store keeps (key id, name, role, sha256 of
the whole token, created, revoked): a Postgres table when DATABASE_URL is set, else a JSON file
under NLP_DATA_DIR (mode 0600, replaced atomically under a lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from nlp_assets.api.config import ROLES, ApiSettings
from nlp_assets.atomic import write_atomic

TOKEN_PREFIX = "nlp_"
#: A channel (the `source` a key may write): lower-case letters, digits, `_`, `-`, `.`.
CHANNEL = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    role: str
    created_at: str
    revoked_at: str | None = None
    #: The channels this key may submit to; empty: the server's default channel only.
    channels: tuple[str, ...] = ()
    #: When the key stops working (ISO 8601, UTC); None: never (until revoked).
    expires_at: str | None = None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and datetime.fromisoformat(
            self.expires_at
        ) <= datetime.now(UTC)

    @property
    def active(self) -> bool:
        return self.revoked_at is None and not self.expired


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """(key id, token)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(token: str) -> str | None:
    """The key id a token names, or None when it is not shaped like one of ours."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not secret or len(key_id) != 12:
        return None
    return key_id


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    return role


def check_channels(channels: Iterable[str] | None) -> tuple[str, ...]:
    """Channel names, checked (a key bound to a bad name would never match a record)."""
    checked = tuple(dict.fromkeys(channels or ()))
    bad = [c for c in checked if not isinstance(c, str) or not CHANNEL.fullmatch(c)]
    if bad:
        raise ValueError(
            f"invalid channel name(s) {', '.join(map(repr, bad))}: lower-case letters, digits, "
            "'_', '-' and '.', at most 64"
        )
    return checked


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def _sooner(current: str | None, moment: datetime) -> datetime:
    """`moment`, or the key's own expiry when that comes first (rotation never extends)."""
    if current is not None and datetime.fromisoformat(current) < moment:
        return datetime.fromisoformat(current)
    return moment


class KeyStore(Protocol):
    def create(
        self,
        name: str,
        role: str,
        channels: Iterable[str] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKey, str]: ...
    def rotate(self, key_id: str, overlap: timedelta) -> tuple[ApiKey, ApiKey, str]: ...
    def list(self) -> list[ApiKey]: ...
    def revoke(self, key_id: str) -> ApiKey: ...
    def verify(self, token: str) -> ApiKey | None: ...
    def check(self) -> None: ...


class FileKeyStore:
    """Keys in one JSON file (single host: `make api`, tests without Postgres)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield self._read()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text(encoding="utf-8"))

    def _write(self, keys: dict[str, dict]) -> None:
        def write(tmp: Path) -> None:  # readable by this user only, from the first byte
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(keys, handle, indent=1, sort_keys=True)

        write_atomic(self.path, write)

    @staticmethod
    def _key(row: dict) -> ApiKey:
        fields = {k: row.get(k) for k in ApiKey.__dataclass_fields__}
        fields["channels"] = tuple(row.get("channels") or ())
        return ApiKey(**fields)  # type: ignore[arg-type]

    def create(
        self,
        name: str,
        role: str,
        channels: Iterable[str] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        with self._locked() as keys:
            key, token = self._add(keys, name, role, channels, expires_at)
            self._write(keys)
        return key, token

    def _add(
        self,
        keys: dict[str, dict],
        name: str,
        role: str,
        channels: Iterable[str] | None,
        expires_at: datetime | None,
    ) -> tuple[ApiKey, str]:
        key_id, token = new_token()
        key = ApiKey(
            key_id,
            name,
            _check_role(role),
            _now(),
            channels=check_channels(channels),
            expires_at=_stamp(expires_at),
        )
        keys[key_id] = {
            **asdict(key),
            "channels": list(key.channels),
            "token_sha256": token_hash(token),
        }
        return key, token

    def rotate(self, key_id: str, overlap: timedelta) -> tuple[ApiKey, ApiKey, str]:
        """A successor (same name, role, channels and lifetime) and the old key's expiry moved
        to now + `overlap` (never later than it was): (old, successor, successor's token)."""
        with self._locked() as keys:
            row = keys.get(key_id)
            old = self._key(row) if row is not None else None
            old, successor_expiry, old_expiry = _rotation(old, key_id, overlap)
            successor, token = self._add(keys, old.name, old.role, old.channels, successor_expiry)
            keys[key_id]["expires_at"] = _stamp(old_expiry)
            self._write(keys)
            return self._key(keys[key_id]), successor, token

    def list(self) -> list[ApiKey]:
        return sorted((self._key(r) for r in self._read().values()), key=lambda k: k.created_at)

    def revoke(self, key_id: str) -> ApiKey:
        with self._locked() as keys:
            if key_id not in keys:
                raise KeyError(f"no API key {key_id!r} (see `nlp keys list`)")
            keys[key_id]["revoked_at"] = keys[key_id].get("revoked_at") or _now()
            self._write(keys)
            return self._key(keys[key_id])

    def verify(self, token: str) -> ApiKey | None:
        key_id = key_id_of(token)
        row = self._read().get(key_id) if key_id else None
        if row is None or not hmac.compare_digest(row["token_sha256"], token_hash(token)):
            return None
        return self._key(row)

    def check(self) -> None:
        self._read()


class PostgresKeyStore:
    """Keys in `<schema>.api_keys` (created on first use)."""

    def __init__(self, database_url: str, schema: str = "nlp_api"):
        from nlp_assets.warehouse.load import check_identifier

        self._url = database_url
        self.schema = check_identifier(schema)
        self._ready = False
        self._lock = threading.Lock()

    def _connect(self):
        import psycopg2

        try:
            return psycopg2.connect(self._url, connect_timeout=5, application_name="nlp_api")
        except psycopg2.Error as error:
            from nlp_assets.resources.warehouse import redact_url

            reason = redact_url(str(error), keep_user=True).strip()
            raise ConnectionError(f"cannot reach the key store database: {reason}") from None

    @contextlib.contextmanager
    def _cursor(self):
        conn = self._connect()
        try:
            with conn, conn.cursor() as cursor:
                if not self._ready:
                    self._ensure(cursor)
                yield cursor
        finally:
            conn.close()

    def _ensure(self, cursor) -> None:
        from psycopg2 import sql

        with self._lock:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{self.schema}:keys"])
            cursor.execute(
                sql.SQL(
                    "CREATE SCHEMA IF NOT EXISTS {s}; "
                    "CREATE TABLE IF NOT EXISTS {s}.api_keys ("
                    " key_id text PRIMARY KEY, name text NOT NULL,"
                    " role text NOT NULL CHECK (role IN ('reader', 'submitter', 'operator')),"
                    " token_sha256 text NOT NULL UNIQUE,"
                    " created_at timestamptz NOT NULL DEFAULT now(), revoked_at timestamptz);"
                    "ALTER TABLE {s}.api_keys"
                    " ADD COLUMN IF NOT EXISTS channels text[] NOT NULL DEFAULT '{{}}',"
                    " ADD COLUMN IF NOT EXISTS expires_at timestamptz"
                ).format(s=sql.Identifier(self.schema))
            )
            self._ready = True

    def _table(self):
        from psycopg2 import sql

        return sql.Identifier(self.schema, "api_keys")

    @staticmethod
    def _key(row) -> ApiKey:
        key_id, name, role, created, revoked, channels, expires = row
        return ApiKey(
            key_id,
            name,
            role,
            created.isoformat(timespec="seconds"),
            revoked.isoformat(timespec="seconds") if revoked else None,
            tuple(channels or ()),
            _stamp(expires),
        )

    _COLUMNS = "key_id, name, role, created_at, revoked_at, channels, expires_at"

    def create(
        self,
        name: str,
        role: str,
        channels: Iterable[str] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        with self._cursor() as cursor:
            return self._insert(cursor, name, role, channels, expires_at)

    def _insert(self, cursor, name, role, channels, expires_at) -> tuple[ApiKey, str]:
        from psycopg2 import sql

        key_id, token = new_token()
        cursor.execute(
            sql.SQL(
                "INSERT INTO {} (key_id, name, role, token_sha256, channels, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING " + self._COLUMNS
            ).format(self._table()),
            [
                key_id,
                name,
                _check_role(role),
                token_hash(token),
                list(check_channels(channels)),
                expires_at,
            ],
        )
        return self._key(cursor.fetchone()), token

    def rotate(self, key_id: str, overlap: timedelta) -> tuple[ApiKey, ApiKey, str]:
        """As `FileKeyStore.rotate`, in one transaction (the old row locked)."""
        from psycopg2 import sql

        with self._cursor() as cursor:
            cursor.execute(
                sql.SQL("SELECT " + self._COLUMNS + " FROM {} WHERE key_id = %s FOR UPDATE").format(
                    self._table()
                ),
                [key_id],
            )
            row = cursor.fetchone()
            old = self._key(row) if row is not None else None
            old, successor_expiry, old_expiry = _rotation(old, key_id, overlap)
            successor, token = self._insert(
                cursor, old.name, old.role, old.channels, successor_expiry
            )
            cursor.execute(
                sql.SQL(
                    "UPDATE {} SET expires_at = %s WHERE key_id = %s RETURNING " + self._COLUMNS
                ).format(self._table()),
                [old_expiry, key_id],
            )
            return self._key(cursor.fetchone()), successor, token

    def list(self) -> list[ApiKey]:
        from psycopg2 import sql

        with self._cursor() as cursor:
            cursor.execute(
                sql.SQL("SELECT " + self._COLUMNS + " FROM {} ORDER BY created_at").format(
                    self._table()
                )
            )
            return [self._key(row) for row in cursor.fetchall()]

    def revoke(self, key_id: str) -> ApiKey:
        from psycopg2 import sql

        with self._cursor() as cursor:
            cursor.execute(
                sql.SQL(
                    "UPDATE {} SET revoked_at = COALESCE(revoked_at, now()) WHERE key_id = %s "
                    "RETURNING " + self._COLUMNS
                ).format(self._table()),
                [key_id],
            )
            row = cursor.fetchone()
        if row is None:
            raise KeyError(f"no API key {key_id!r} (see `nlp keys list`)")
        return self._key(row)

    def verify(self, token: str) -> ApiKey | None:
        from psycopg2 import sql

        if key_id_of(token) is None:
            return None
        with self._cursor() as cursor:
            cursor.execute(
                sql.SQL("SELECT " + self._COLUMNS + " FROM {} WHERE token_sha256 = %s").format(
                    self._table()
                ),
                [token_hash(token)],
            )
            row = cursor.fetchone()
        return self._key(row) if row else None

    def check(self) -> None:
        with self._cursor() as cursor:
            cursor.execute("SELECT 1")


def _rotation(
    old: ApiKey | None, key_id: str, overlap: timedelta
) -> tuple[ApiKey, datetime | None, datetime]:
    """What rotating `old` sets, in either store: (`old`; its successor's expiry, which lasts as
    long as `old` was made to; `old`'s new expiry, now + `overlap` or sooner). Refuses a missing,
    revoked or expired key."""
    if old is None:
        raise KeyError(f"no API key {key_id!r} (see `nlp keys list`)")
    if not old.active:
        raise ValueError(f"API key {key_id} is revoked or expired: create a new one")
    now = datetime.now(UTC)
    lifetime = _lifetime(old)
    return old, (now + lifetime if lifetime else None), _sooner(old.expires_at, now + overlap)


def _lifetime(key: ApiKey) -> timedelta | None:
    """How long the key was made to last (its successor gets as long)."""
    if key.expires_at is None:
        return None
    return datetime.fromisoformat(key.expires_at) - datetime.fromisoformat(key.created_at)


def key_store(config: ApiSettings) -> KeyStore:
    """Postgres when DATABASE_URL is set, else the JSON file."""
    if config.database_url:
        return PostgresKeyStore(config.database_url, config.keys_schema)
    return FileKeyStore(config.keys_file)
