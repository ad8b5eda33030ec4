"""The API's view of the settings: `ApiSettings.from_env` builds it from the one typed
`nlp_assets.settings.Settings` the pipeline reads too (docs/settings.md lists the variables),
adding the values the environment derives (keys schema and file, Redis prefix, warehouse schema).

Secrets (DATABASE_URL, REDIS_URL) come only from the environment; nothing here is ever logged
or returned by an endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from nlp_assets import settings

ROLES = ("reader", "submitter", "operator")
#: The body cap of every route but those in BODY_PATHS (a backfill range is a few bytes).
SMALL_BODY_BYTES = 16 * 1024
#: Routes whose bodies carry text, capped at `max_body_bytes`; every other body at SMALL_BODY_BYTES.
BODY_PATHS = frozenset({"/v1/documents", "/v1/predict"})
#: Paths anyone may call: the liveness probe only (docs/api.md).
PUBLIC_PATHS = frozenset({"/healthz"})


def _sslmode(url: str) -> str | None:
    """The sslmode a libpq URL asks for (`PGSSLMODE` when it names none)."""
    from urllib.parse import parse_qs, urlsplit

    modes = parse_qs(urlsplit(url).query).get("sslmode")
    return modes[-1] if modes else settings.get().pg_sslmode


@dataclass(frozen=True)
class ApiSettings:
    # caps (413 past them); one record is capped by the raw stage's own Kafka message limit
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch: int = 1_000
    predict_max_texts: int = 64  # POST /v1/predict: texts per request
    max_record_bytes: int = field(default_factory=settings.kafka_max_message_bytes)
    max_page_size: int = 1_000
    default_source: str = "api"
    # where accepted documents go
    landing_dir: str = field(default_factory=settings.landing_dir)
    kafka_bootstrap: str | None = None
    kafka_topic: str = "nlp-documents"
    # where results are read
    lake_dir: str = field(default_factory=settings.lake_dir)
    reports_dir: str = field(default_factory=settings.reports_dir)
    database_url: str | None = None
    warehouse_schema: str = "nlp"
    lookup_days: int = 7
    # security
    keys_schema: str = "nlp_api"
    keys_file: str = field(default_factory=lambda: str(settings.data_dir() / "api" / "keys.json"))
    key_cache_seconds: float = 5.0
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_url: str | None = None
    #: How long the JWKS is kept: a signing key removed from it is refused within this
    #: (0: fetched for every token, for tests). An unknown `kid` refetches at most every 30 s.
    jwt_jwks_cache_seconds: float = 300.0
    jwt_public_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("RS256", "ES256")
    jwt_roles_claim: str = "roles"
    jwt_channels_claim: str = "channels"
    # rate limits: a token bucket per key (Redis when REDIS_URL is set, else per process)
    redis_url: str | None = None
    redis_prefix: str = "nlp:api"
    rate_per_second: float = 20.0
    rate_burst: int = 40
    # failed authentications, per client address (guessing keys or tokens is metered too)
    auth_failure_rate_per_second: float = 1.0
    auth_failure_burst: int = 20
    # backfills
    dagster_graphql_url: str | None = None
    dagster_job: str = "daily_pipeline"
    readiness_timeout_s: float = 2.0
    # encryption in transit: TLS 1.3 on the API's own port (`python -m nlp_assets.api.serve`)
    # when a certificate is given; with require_tls, no plaintext connection to Postgres/Redis
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    require_tls: bool = False

    @property
    def jwt_configured(self) -> bool:
        return bool(self.jwt_jwks_url or self.jwt_public_key)

    @property
    def accepted_index(self) -> Path:
        """The index of accepted documents without a database (beside this environment's
        key file): one row per doc_id, so a status lookup never re-reads landing parts."""
        keys = Path(self.keys_file)
        return keys.with_name(keys.stem.replace("keys", "accepted", 1) + ".sqlite")

    def check(self) -> None:
        """Refuse settings the API must not start with (docs/api.md)."""
        if self.require_tls:
            plaintext = []
            if self.database_url and _sslmode(self.database_url) != "verify-full":
                plaintext.append("DATABASE_URL (needs sslmode=verify-full)")
            if self.redis_url and not self.redis_url.startswith("rediss://"):
                plaintext.append("REDIS_URL (needs rediss://)")
            if plaintext:
                raise ValueError(
                    "NLP_API_REQUIRE_TLS is set, but these connections could go in plaintext: "
                    + ", ".join(plaintext)
                )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("set both NLP_API_TLS_CERT_FILE and NLP_API_TLS_KEY_FILE, or neither")
        if self.jwt_configured and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError(
                "JWT bearers are configured (NLP_JWT_JWKS_URL or NLP_JWT_PUBLIC_KEY) without "
                "NLP_JWT_ISSUER and NLP_JWT_AUDIENCE: set both, the claims every token must carry"
            )

    @classmethod
    def from_env(cls) -> ApiSettings:
        """The API's settings from `settings.get()` (a bad value fails naming its variable)."""
        s = settings.get()
        public_key = s.jwt_public_key
        if s.jwt_public_key_file and not public_key:
            public_key = Path(s.jwt_public_key_file).read_text(encoding="utf-8")
        topics = settings.kafka_topics()
        # Schemas and Redis keys of the environment NLP_ENV names (docs/environments.md).
        env = settings.environment()
        own_keys_schema = cls.keys_schema if env.name == "dev" else f"{cls.keys_schema}_{env.name}"
        own_keys_file = (
            settings.data_dir()
            / "api"
            / ("keys.json" if env.name == "dev" else f"keys-{env.name}.json")
        )
        return cls(
            max_body_bytes=s.api_max_body_bytes,
            max_batch=s.api_max_batch,
            predict_max_texts=s.api_predict_max_texts,
            max_record_bytes=s.kafka_max_message_bytes,
            max_page_size=s.api_max_page_size,
            default_source=s.api_default_source,
            landing_dir=env.landing_dir,
            # unset (not its client default): the landing folder is the sink
            kafka_bootstrap=(
                s.kafka_bootstrap_servers if s.is_set("KAFKA_BOOTSTRAP_SERVERS") else None
            ),
            kafka_topic=s.api_kafka_topic or (topics[0][0] if topics else "nlp"),
            lake_dir=env.lake_dir,
            reports_dir=env.reports_dir,
            database_url=_secret(s.database_url),
            warehouse_schema=env.warehouse_schema,
            lookup_days=s.api_lookup_days,
            keys_schema=s.api_keys_schema or own_keys_schema,
            keys_file=s.api_keys_file or str(own_keys_file),
            key_cache_seconds=s.api_key_cache_seconds,
            jwt_issuer=s.jwt_issuer,
            jwt_audience=s.jwt_audience,
            jwt_jwks_url=s.jwt_jwks_url,
            jwt_jwks_cache_seconds=s.jwt_jwks_cache_seconds,
            jwt_public_key=public_key,
            jwt_algorithms=tuple(a.strip() for a in s.jwt_algorithms.split(",") if a.strip()),
            jwt_roles_claim=s.jwt_roles_claim,
            jwt_channels_claim=s.jwt_channels_claim,
            redis_url=_secret(s.redis_url),
            redis_prefix=s.api_redis_prefix or f"{env.cache_namespace}:api",
            rate_per_second=s.api_rate_per_second,
            rate_burst=s.api_rate_burst,
            auth_failure_rate_per_second=s.api_auth_failure_rate_per_second,
            auth_failure_burst=s.api_auth_failure_burst,
            dagster_graphql_url=s.dagster_graphql_url,
            dagster_job=s.api_backfill_job,
            readiness_timeout_s=s.api_readiness_timeout_s,
            tls_cert_file=s.api_tls_cert_file,
            tls_key_file=s.api_tls_key_file,
            require_tls=s.api_require_tls,
        )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
