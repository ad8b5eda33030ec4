"""Every environment variable the pipeline and the API read, in one typed object.

`get()` returns the process's `Settings` (pydantic-settings): each variable is parsed and
validated in one place, once, and a bad value fails with the variable's name. A deployed process
never changes its environment, so it builds the object once; tests that set a variable get a
new one (`get()` rebuilds only when a value it reads differs). The module functions below
(`lake_dir()`, `kafka_topics()`, ...) are the call sites' shorthands for its fields.

None is a secret except where noted (`SecretStr`: `DATABASE_URL`, `REDIS_URL`, whose URLs may hold
a password, and `KAFKA_SASL_PASSWORD`; resources get secrets as `dg.EnvVar`);
each has a default, except the folders and instance of `NLP_ENV=prod`: see `environment()` and
docs/environments.md. Importing this module reads nothing and writes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Default of `NLP_EMBEDDING_MAX_WINDOWS` (docs/models.md "Long documents").
EMBEDDING_MAX_WINDOWS = 4


def _var(name: str, default: Any = None, **constraints: Any) -> Any:
    """A field read from environment variable `name` (exactly that name)."""
    return Field(default, validation_alias=name, **constraints)


class Settings(BaseSettings):
    """The environment, typed (docs/settings.md lists every variable). Unset and empty
    variables take the default. The API's variables (`NLP_API_*`, `NLP_JWT_*`, `DATABASE_URL`,
    `REDIS_URL`, `NLP_DAGSTER_GRAPHQL_URL`) are fields too: `ApiSettings.from_env`
    (nlp_assets/api/config.py) is the API's view of this object."""

    model_config = SettingsConfigDict(
        case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True
    )

    # where things live (the environment's folders: `environment()`)
    data_dir: Path = _var("NLP_DATA_DIR", Path("data"))
    env_name: str = _var("NLP_ENV", "dev")
    lake_dir: str | None = _var("NLP_LAKE_DIR")
    # files no table version younger than this needs are vacuumed (docs/lake.md)
    lake_vacuum_retention_hours: float = _var("NLP_LAKE_VACUUM_RETENTION_HOURS", 168.0)
    # the lake on object storage (an s3:// NLP_LAKE_DIR; docs/lake.md "Object storage"): delta-rs
    # reads every AWS_* variable itself; s3fs (listing tables, the day leases) gets the endpoint
    # and region from these (`lake_filesystem_options`). No credential is a field: delta-rs and
    # botocore read AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN themselves.
    aws_endpoint_url: str | None = _var("AWS_ENDPOINT_URL")
    aws_region: str | None = _var("AWS_REGION")
    aws_default_region: str | None = _var("AWS_DEFAULT_REGION")
    landing_dir: str | None = _var("NLP_LANDING_DIR")
    reports_dir: str | None = _var("NLP_REPORTS_DIR")
    kafka_topic_prefix: str | None = _var("NLP_KAFKA_TOPIC_PREFIX")
    warehouse_schema: str | None = _var("NLP_WAREHOUSE_SCHEMA")
    cache_namespace: str | None = _var("NLP_CACHE_NAMESPACE")
    dagster_home: str | None = _var("DAGSTER_HOME")
    labelled_sentiment: str | None = _var("NLP_LABELLED_SENTIMENT")
    partitions_start: str = _var("NLP_PARTITIONS_START", "2026-01-01")
    # models (docs/models.md)
    embedding_model_path: str = _var("NLP_EMBEDDING_MODEL_PATH", "")
    embedding_max_windows: int = _var("NLP_EMBEDDING_MAX_WINDOWS", EMBEDDING_MAX_WINDOWS, ge=1)
    ner_model: str = _var("NLP_NER_MODEL", "")
    ner_processes: int = _var("NLP_NER_PROCESSES", 0, ge=0)
    device: str = _var("NLP_DEVICE", "auto")
    model_backend: str = _var("NLP_MODEL_BACKEND", "auto")
    model_artifacts_dir: Path | None = _var("NLP_MODEL_ARTIFACTS_DIR")
    model_dtype: str = _var("NLP_MODEL_DTYPE", "auto")
    cache_ttl_seconds: int = _var("NLP_CACHE_TTL_SECONDS", 30 * 86_400)
    # the shared model server (docs/models.md "Model server"); unset: models load in-process
    model_server_url: str | None = _var("NLP_MODEL_SERVER_URL")
    model_server_wait_seconds: float = _var("NLP_MODEL_SERVER_WAIT_SECONDS", 20.0, ge=0)
    model_server_token: SecretStr | None = _var("NLP_MODEL_SERVER_TOKEN")
    finetuned_sentiment_dir: str | None = _var("NLP_FINETUNED_SENTIMENT_DIR")
    finetune_epochs: int = _var("NLP_FINETUNE_EPOCHS", 2)
    finetune_max_rows: int = _var("NLP_FINETUNE_MAX_ROWS", 2000)
    finetune_device: str = _var("NLP_FINETUNE_DEVICE", "cpu")
    sentiment_ab_share: float = _var("NLP_SENTIMENT_AB_SHARE", 0.5)
    # where steps run, metrics (docs/production.md, docs/monitoring.md)
    executor: str = _var("NLP_EXECUTOR", "default")
    k8s_executor_config: str = _var("NLP_K8S_EXECUTOR_CONFIG", "")
    spark_master: str = _var("NLP_SPARK_MASTER", "local[*]")
    spark_conf: str = _var("NLP_SPARK_CONF", "")
    pushgateway: str | None = _var("PROMETHEUS_PUSHGATEWAY")
    metrics_textfile_dir: Path | None = _var("NLP_METRICS_TEXTFILE_DIR")
    # log lines of every process: human-readable text, or one JSON object per line
    # (nlp_assets/logs.py, docs/monitoring.md "Logs"; deploy/ sets json)
    log_format: Literal["text", "json"] = _var("NLP_LOG_FORMAT", "text")
    # landing-file caps (nlp_assets/kernels/ingest.py)
    ingest_max_file_bytes: int = _var("NLP_INGEST_MAX_FILE_BYTES", 256 * 1024 * 1024)
    ingest_max_record_bytes: int = _var("NLP_INGEST_MAX_RECORD_BYTES", 4 * 1024 * 1024)
    # Kafka (docs/kafka.md)
    kafka_topics: str = _var("NLP_KAFKA_TOPICS", "nlp-documents")
    kafka_bootstrap_servers: str = _var("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    kafka_security_protocol: str = _var("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    kafka_sasl_mechanism: str | None = _var("KAFKA_SASL_MECHANISM")
    kafka_sasl_username: str | None = _var("KAFKA_SASL_USERNAME")
    # a secret: only whether it is set is used here (the resource reads it as a dg.EnvVar)
    kafka_sasl_password: SecretStr | None = _var("KAFKA_SASL_PASSWORD")
    kafka_ssl_ca_location: str | None = _var("KAFKA_SSL_CA_LOCATION")
    kafka_ssl_certificate_location: str | None = _var("KAFKA_SSL_CERTIFICATE_LOCATION")
    kafka_ssl_key_location: str | None = _var("KAFKA_SSL_KEY_LOCATION")
    kafka_extra_config: dict[str, Any] = _var("KAFKA_EXTRA_CONFIG", {})  # a JSON object
    kafka_max_messages_per_run: int = _var("NLP_KAFKA_MAX_MESSAGES_PER_RUN", 5000)
    kafka_max_runs_per_tick: int = _var("NLP_KAFKA_MAX_RUNS_PER_TICK", 10)
    kafka_sensor_interval_seconds: int = _var("NLP_KAFKA_SENSOR_INTERVAL_SECONDS", 30)
    kafka_max_message_bytes: int = _var("NLP_KAFKA_MAX_MESSAGE_BYTES", 64 * 1024)
    kafka_range_max_attempts: int = _var("NLP_KAFKA_RANGE_MAX_ATTEMPTS", 3)
    kafka_range_retry_backoff_seconds: float = _var("NLP_KAFKA_RANGE_RETRY_BACKOFF_SECONDS", 60.0)
    kafka_day_refresh_minutes: float = _var("NLP_KAFKA_DAY_REFRESH_MINUTES", 10.0)
    kafka_max_outstanding_ranges: int = _var("NLP_KAFKA_MAX_OUTSTANDING_RANGES", 100)
    # set by `dg check defs` / `dagster definitions validate` while they load the definitions
    validating_definitions: bool = _var("DAGSTER_IS_DEFS_VALIDATION_CLI", False)
    # the API (nlp_assets/api/config.py `ApiSettings.from_env`, docs/api.md); unset optional
    # ones take the environment's own value there (keys schema and file, Redis prefix, topic)
    api_max_body_bytes: int = _var("NLP_API_MAX_BODY_BYTES", 8 * 1024 * 1024, ge=1)
    api_max_batch: int = _var("NLP_API_MAX_BATCH", 1_000, ge=1)
    api_predict_max_texts: int = _var("NLP_API_PREDICT_MAX_TEXTS", 64, ge=1)
    api_max_page_size: int = _var("NLP_API_MAX_PAGE_SIZE", 1_000, ge=1)
    api_default_source: str = _var("NLP_API_DEFAULT_SOURCE", "api")
    api_kafka_topic: str | None = _var("NLP_API_KAFKA_TOPIC")
    api_lookup_days: int = _var("NLP_API_LOOKUP_DAYS", 7, ge=1)
    api_keys_schema: str | None = _var("NLP_API_KEYS_SCHEMA")
    api_keys_file: str | None = _var("NLP_API_KEYS_FILE")
    api_key_cache_seconds: float = _var("NLP_API_KEY_CACHE_SECONDS", 5.0, ge=0)
    api_redis_prefix: str | None = _var("NLP_API_REDIS_PREFIX")
    api_rate_per_second: float = _var("NLP_API_RATE_PER_SECOND", 20.0, gt=0)
    api_rate_burst: int = _var("NLP_API_RATE_BURST", 40, ge=1)
    api_auth_failure_rate_per_second: float = _var(
        "NLP_API_AUTH_FAILURE_RATE_PER_SECOND", 1.0, gt=0
    )
    api_auth_failure_burst: int = _var("NLP_API_AUTH_FAILURE_BURST", 20, ge=1)
    api_backfill_job: str = _var("NLP_API_BACKFILL_JOB", "daily_pipeline")
    api_readiness_timeout_s: float = _var("NLP_API_READINESS_TIMEOUT_S", 2.0, gt=0)
    api_tls_cert_file: str | None = _var("NLP_API_TLS_CERT_FILE")
    api_tls_key_file: str | None = _var("NLP_API_TLS_KEY_FILE")
    api_require_tls: bool = _var("NLP_API_REQUIRE_TLS", False)
    jwt_issuer: str | None = _var("NLP_JWT_ISSUER")
    jwt_audience: str | None = _var("NLP_JWT_AUDIENCE")
    jwt_jwks_url: str | None = _var("NLP_JWT_JWKS_URL")
    jwt_jwks_cache_seconds: float = _var("NLP_JWT_JWKS_CACHE_SECONDS", 300.0, ge=0)
    jwt_public_key: str | None = _var("NLP_JWT_PUBLIC_KEY")  # a public key: not a secret
    jwt_public_key_file: str | None = _var("NLP_JWT_PUBLIC_KEY_FILE")
    jwt_algorithms: str = _var("NLP_JWT_ALGORITHMS", "RS256,ES256")  # comma-separated
    jwt_roles_claim: str = _var("NLP_JWT_ROLES_CLAIM", "roles")
    jwt_channels_claim: str = _var("NLP_JWT_CHANNELS_CLAIM", "channels")
    dagster_graphql_url: str | None = _var("NLP_DAGSTER_GRAPHQL_URL")
    # secrets (a URL may hold a password): `.get_secret_value()` where a client needs them
    database_url: SecretStr | None = _var("DATABASE_URL")
    redis_url: SecretStr | None = _var("REDIS_URL")
    pg_sslmode: str | None = _var("PGSSLMODE")  # libpq's own; the API checks it (require-TLS)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()

    @field_validator(
        "env_name",
        "lake_dir",
        "landing_dir",
        "reports_dir",
        "kafka_topic_prefix",
        "warehouse_schema",
        "cache_namespace",
        "dagster_home",
        "spark_conf",
    )
    @classmethod
    def _stripped(cls, value: str | None) -> str | None:
        return value.strip() if isinstance(value, str) else value

    @classmethod
    def variables(cls) -> tuple[str, ...]:
        """Every environment variable a `Settings` reads."""
        return tuple(str(field.validation_alias) for field in cls.model_fields.values())

    def is_set(self, variable: str) -> bool:
        """Whether `variable` (one of `variables()`) was set, non-empty."""
        return any(
            field.validation_alias == variable and name in self.model_fields_set
            for name, field in type(self).model_fields.items()
        )


def get() -> Settings:
    """This process's settings, built and validated once from its environment (again only if
    a variable they read changed since: tests do that, a deployed process does not)."""
    return _settings(tuple(os.environ.get(name) for name in _VARIABLES))


_VARIABLES = Settings.variables()


@functools.lru_cache(maxsize=8)
def _settings(values: tuple[str | None, ...]) -> Settings:  # `values` is the cache key
    return Settings()


def data_dir() -> Path:
    return get().data_dir


def landing_dir() -> str:
    """`NLP_LANDING_DIR`, else the environment's own (dev: `data/landing`)."""
    return environment().landing_dir


def lake_dir() -> str:
    """`NLP_LAKE_DIR`, else the environment's own (dev: `data/lake`)."""
    return environment().lake_dir


def lake_vacuum_retention_hours() -> float:
    """`NLP_LAKE_VACUUM_RETENTION_HOURS` (default a week): longer than any run or read."""
    return get().lake_vacuum_retention_hours


#: Object stores whose fsspec filesystem gets options from the environment (`s3fs`).
S3_PROTOCOLS = ("s3", "s3a")


def lake_filesystem_options(root: str) -> dict[str, Any]:
    """fsspec options for a lake root (`nlp_assets.lake.locks.lake_path`), from the environment.

    Any object store: no cached directory listings, since other processes change them (a day's
    lease generations, heartbeats, new tables) and a cached listing would hide that. s3://: the
    endpoint (`AWS_ENDPOINT_URL`, an S3-compatible server) and region (`AWS_REGION`, else
    `AWS_DEFAULT_REGION`) that delta-rs reads too, so both clients talk to the same store.
    Credentials are left to botocore's own chain (the AWS_* variables, a profile, the instance
    role): none is ever copied here. A local root needs none."""
    protocol = root.split("://", 1)[0].lower() if "://" in root else ""
    if protocol in ("", "file", "local"):
        return {}
    options: dict[str, Any] = {"use_listings_cache": False}
    if protocol in S3_PROTOCOLS:
        given = get()
        if given.aws_endpoint_url:
            options["endpoint_url"] = given.aws_endpoint_url
        region = given.aws_region or given.aws_default_region
        if region:
            options["client_kwargs"] = {"region_name": region}
    return options


def reports_dir() -> str:
    """`NLP_REPORTS_DIR`, else the environment's own (dev: `data/reports`)."""
    return environment().reports_dir


def labelled_sentiment_path() -> str:
    return get().labelled_sentiment or str(data_dir() / "labelled" / "sentiment.parquet")


def embedding_max_windows() -> int:
    """`NLP_EMBEDDING_MAX_WINDOWS`: the most windows a long document is embedded in (1: only
    its first window, as before windowing); the rest of its text is not read."""
    return get().embedding_max_windows


def configured(name: str, default: str) -> str:
    """A resource field from variable `name`: `dg.EnvVar(name)` when it is set, so the UI and
    run config show the variable's name (Dagster reads its value at run time), else `default`."""
    import dagster as dg

    return dg.EnvVar(name) if get().is_set(name) else default


# Models (docs/models.md): the default entries of the model resource.
def embedding_model_path() -> str:
    """`NLP_EMBEDDING_MODEL_PATH`: folder of an encoder checkpoint ('' = bundled MiniLM)."""
    return get().embedding_model_path


def ner_model() -> str:
    """`NLP_NER_MODEL`: installed spaCy pipeline package or folder ('' = the default)."""
    return get().ner_model


def ner_processes() -> int:
    """`NLP_NER_PROCESSES`: forked worker processes spaCy NER runs a large call in
    (`EntityRecognizer`); 0 (default): one per CPU core this process may use; 1: in-process."""
    return get().ner_processes or len(os.sched_getaffinity(0))


def model_device() -> str:
    """`NLP_DEVICE`: 'auto' (CUDA when present), 'cpu' or 'cuda'."""
    return get().device


def model_server() -> tuple[str, float, str | None] | None:
    """`NLP_MODEL_SERVER_URL`, `NLP_MODEL_SERVER_WAIT_SECONDS` (how long a caller waits for
    an unreachable server before loading models itself) and `NLP_MODEL_SERVER_TOKEN` (a
    secret); None when no server is configured."""
    current = get()
    if not current.model_server_url:
        return None
    token = current.model_server_token
    return (
        current.model_server_url,
        current.model_server_wait_seconds,
        token.get_secret_value() if token else None,
    )


def model_artifacts_dir() -> Path:
    """`NLP_MODEL_ARTIFACTS_DIR`: exported embedding backends and their calibration records
    (docs/models.md "Backends"); default `<NLP_DATA_DIR>/model-artifacts`."""
    return get().model_artifacts_dir or data_dir() / "model-artifacts"


def cache_ttl_seconds() -> int:
    """`NLP_CACHE_TTL_SECONDS`: how long a cached model result lives in Redis (30 days)."""
    return get().cache_ttl_seconds


# Where steps run (docs/production.md) and where metrics go (docs/monitoring.md).
def executor_choice() -> str:
    """`NLP_EXECUTOR`: 'default' (Dagster's multiprocess executor) or 'k8s' (a pod per step)."""
    return get().executor


def k8s_executor_config_path() -> str:
    """`NLP_K8S_EXECUTOR_CONFIG`: the step-pod profiles (required with `NLP_EXECUTOR=k8s`)."""
    return get().k8s_executor_config


def spark_master() -> str:
    """`NLP_SPARK_MASTER`: local[*] (default), spark://host:7077 or sc://host:15002."""
    return get().spark_master


def spark_conf() -> str:
    """`NLP_SPARK_CONF`: a JSON object of Spark settings ('' = none)."""
    return get().spark_conf


def pushgateway_url() -> str | None:
    """`PROMETHEUS_PUSHGATEWAY`: host:port of a Pushgateway; unset, metrics go to text files."""
    return get().pushgateway


def metrics_textfile_dir() -> Path:
    """`NLP_METRICS_TEXTFILE_DIR`: the node exporter's text-file folder (<data>/metrics)."""
    return get().metrics_textfile_dir or data_dir() / "metrics"


# The fine-tuned sentiment classifier (docs/models.md "Fine-tuned classifier").
def finetuned_sentiment_dir(lake: str | None = None) -> str:
    """`NLP_FINETUNED_SENTIMENT_DIR`: local folder of the fine-tuned checkpoints
    (`<version>/` and `CURRENT`); default `<lake>/_models/sentiment_finetuned` for a local lake
    (beside the tables, not in the asset's Delta table folder, whose files `lake_vacuum` owns; set
    it when the lake is on object storage: Hugging Face loads checkpoints from local files)."""
    lake = lake or lake_dir()
    default = f"{lake.removeprefix('file://')}/_models/sentiment_finetuned"
    return get().finetuned_sentiment_dir or default


def finetune_epochs() -> int:
    """`NLP_FINETUNE_EPOCHS`: passes over the training rows (2)."""
    return get().finetune_epochs


def finetune_max_rows() -> int:
    """`NLP_FINETUNE_MAX_ROWS`: training rows used, a stratified sample (2000 of 3636; 0 =
    all), to keep `make run` within minutes on a 2-core CPU."""
    return get().finetune_max_rows


def finetune_device() -> str:
    """`NLP_FINETUNE_DEVICE`: 'cpu' (default: same bytes on every run), 'cuda' or 'auto'."""
    return get().finetune_device


def sentiment_ab_share() -> float:
    """`NLP_SENTIMENT_AB_SHARE`: share of documents the fine-tuned classifier serves as the A/B
    candidate against the logistic head (0 switches the A/B test off)."""
    return get().sentiment_ab_share


def partitions_start() -> str:
    return get().partitions_start


# Landing-file ingest caps (nlp_assets/kernels/ingest.py), checked before anything is parsed.
def ingest_max_file_bytes() -> int:
    """`NLP_INGEST_MAX_FILE_BYTES`: a larger landing file is one quarantine row (256 MiB)."""
    return get().ingest_max_file_bytes


def ingest_max_record_bytes() -> int:
    """`NLP_INGEST_MAX_RECORD_BYTES`: the most a JSONL line, CSV row, Parquet cell or TXT file
    may hold (4 MiB); a larger one is quarantined, its raw bytes cut to this."""
    return get().ingest_max_record_bytes


# Kafka (docs/kafka.md): connection settings are read by `kafka.resource.kafka_from_env`;
# topics, batching and the message size limit here.
def kafka_topics() -> list[tuple[str, int]]:
    """`NLP_KAFKA_TOPICS`: comma-separated `topic[:priority]` (one sensor per topic), each
    name given without, and returned with, the environment's topic prefix."""
    env = environment()
    topics = []
    for item in get().kafka_topics.split(","):
        name, _, priority = item.strip().partition(":")
        if name:
            topics.append((env.topic(name), int(priority or 0)))
    return topics


def kafka_extra_config() -> dict:
    """`KAFKA_EXTRA_CONFIG`: a JSON object of more librdkafka settings (`{}`); the other
    `KAFKA_*` variables become `dg.EnvVar` fields in `kafka.resource.kafka_from_env`."""
    return dict(get().kafka_extra_config)


def kafka_max_messages_per_run() -> int:
    return get().kafka_max_messages_per_run


def kafka_max_runs_per_tick() -> int:
    return get().kafka_max_runs_per_tick


def kafka_sensor_interval_seconds() -> int:
    """`NLP_KAFKA_SENSOR_INTERVAL_SECONDS`: the least time between two ticks of a topic sensor."""
    return get().kafka_sensor_interval_seconds


def kafka_max_message_bytes() -> int:
    return get().kafka_max_message_bytes


def kafka_range_max_attempts() -> int:
    """Requests of a range whose runs fail before one more in dead-letter mode."""
    return get().kafka_range_max_attempts


def kafka_range_retry_backoff_seconds() -> float:
    """Wait after a range's first failure before its next request (doubles each attempt)."""
    return get().kafka_range_retry_backoff_seconds


def kafka_day_refresh_minutes() -> float:
    """`NLP_KAFKA_DAY_REFRESH_MINUTES` (10): the least time between two micro-batches of a topic
    that also refresh the day's quality figures, aggregates and report; 0 = every micro-batch."""
    return get().kafka_day_refresh_minutes


def kafka_max_outstanding_ranges() -> int:
    """Ranges requested and not yet succeeded a sensor keeps track of; no new ones past it."""
    return get().kafka_max_outstanding_ranges


# -- environments: dev, staging and prod side by side (docs/environments.md) ---------------------

#: `NLP_ENV` values; dev is the default.
ENVIRONMENTS = ("dev", "staging", "prod")
#: The variables that override an environment's own values, by `Environment` field.
ENVIRONMENT_VARIABLES = {
    "lake_dir": "NLP_LAKE_DIR",
    "landing_dir": "NLP_LANDING_DIR",
    "reports_dir": "NLP_REPORTS_DIR",
    "kafka_topic_prefix": "NLP_KAFKA_TOPIC_PREFIX",
    "warehouse_schema": "NLP_WAREHOUSE_SCHEMA",
    "cache_namespace": "NLP_CACHE_NAMESPACE",
}
_FOLDERS = ("lake_dir", "landing_dir", "reports_dir")
#: File in DAGSTER_HOME naming the environment whose Dagster instance it is.
INSTANCE_MARKER = "nlp_env"
_CACHE_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class InvalidEnvironment(ValueError):
    """NLP_ENV, or a setting of the environment it names, that must not be used."""


@dataclass(frozen=True)
class Environment:
    """One environment's resource set. No two environments share a lake folder, topic, warehouse
    schema, cache key prefix or Dagster instance: `environment()` refuses a setting that takes
    another environment's value, and `check_instance` another environment's DAGSTER_HOME."""

    name: str
    lake_dir: str
    landing_dir: str
    reports_dir: str
    kafka_topic_prefix: str  # before every topic name (and so every dead-letter topic)
    warehouse_schema: str  # Postgres schema of the warehouse tables and views
    cache_namespace: str  # model-result cache keys start with `<namespace>:`
    dagster_home: str | None

    def topic(self, name: str) -> str:
        """A topic's name in this environment (names are given without a prefix)."""
        for other in ENVIRONMENTS:
            prefix = _own_values(other)["kafka_topic_prefix"]
            if prefix and name.startswith(prefix):
                raise InvalidEnvironment(
                    f"Kafka topic {name!r} starts with the {other} prefix {prefix!r}: name topics "
                    f"without a prefix (NLP_ENV={self.name} adds {self.kafka_topic_prefix!r})"
                )
        return self.kafka_topic_prefix + name


def environment_name() -> str:
    """`NLP_ENV`: dev (default), staging or prod; anything else is refused."""
    name = get().env_name or "dev"
    if name not in ENVIRONMENTS:
        raise InvalidEnvironment(
            f"NLP_ENV={name!r} is not an environment: choose one of {', '.join(ENVIRONMENTS)} "
            "(unset means dev; docs/environments.md)"
        )
    return name


def _own_values(name: str) -> dict[str, str | None]:
    """What environment `name` uses when no variable overrides it. Prod has no folders of its
    own: a production lake, landing folder or report folder is always named explicitly."""
    root = data_dir() if name == "dev" else data_dir() / name
    return {
        **{field: None if name == "prod" else str(root / field[:-4]) for field in _FOLDERS},
        "kafka_topic_prefix": "" if name == "dev" else f"{name}.",
        "warehouse_schema": "nlp" if name == "dev" else f"nlp_{name}",
        "cache_namespace": "nlp" if name == "dev" else f"nlp-{name}",
    }


def _location(path: str) -> str:
    """A folder or URL, comparable: local paths resolved, no trailing slash."""
    return path.rstrip("/") if "://" in path else str(Path(path).resolve())


def _overlaps(a: str, b: str) -> bool:
    a, b = _location(a), _location(b)
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def environment() -> Environment:
    """The resource set of the environment `NLP_ENV` names: its own values (dev: today's
    defaults; staging: `<data>/staging/...`, prefix `staging.`, schema `nlp_staging`, cache
    `nlp-staging`; prod: prefix `prod.`, schema `nlp_prod`, cache `nlp-prod`, folders required),
    each overridable by its variable (`ENVIRONMENT_VARIABLES`). A value that is another
    environment's own (the same schema, cache namespace or topic prefix, a folder inside or
    around another's) is refused, so a copied setting cannot cross environments."""
    name = environment_name()
    values = _own_values(name)
    given = get()
    for field in ENVIRONMENT_VARIABLES:
        if getattr(given, field):
            values[field] = getattr(given, field)
    missing = [ENVIRONMENT_VARIABLES[f] for f in _FOLDERS if values[f] is None]
    if missing:
        raise InvalidEnvironment(
            f"NLP_ENV={name} has no default for {', '.join(missing)}: set "
            f"{'it' if len(missing) == 1 else 'them'} explicitly (docs/environments.md)"
        )
    namespace = values["cache_namespace"] or ""
    if not _CACHE_NAMESPACE.fullmatch(namespace):
        raise InvalidEnvironment(
            f"NLP_CACHE_NAMESPACE={namespace!r}: letters, digits, '_', '.' or '-' only (':' "
            "separates the parts of a cache key)"
        )
    for other in ENVIRONMENTS:
        if other == name:
            continue
        theirs = _own_values(other)
        for field in ("kafka_topic_prefix", "warehouse_schema", "cache_namespace"):
            if values[field] == theirs[field]:
                raise InvalidEnvironment(
                    f"NLP_ENV={name}: {ENVIRONMENT_VARIABLES[field]}={values[field]!r} is the "
                    f"{other} environment's; each environment needs its own"
                )
        for field in _FOLDERS:
            for their_field in _FOLDERS:
                theirs_path = theirs[their_field]
                if theirs_path is not None and _overlaps(values[field] or "", theirs_path):
                    raise InvalidEnvironment(
                        f"NLP_ENV={name}: {ENVIRONMENT_VARIABLES[field]}={values[field]} "
                        f"overlaps the {other} environment's {their_field[:-4]} folder "
                        f"{theirs_path}; each environment needs its own"
                    )
    return Environment(
        name=name,
        dagster_home=given.dagster_home or None,
        **values,  # type: ignore[arg-type]
    )


def check_instance(env: Environment) -> None:
    """Each environment has its own Dagster instance. Prod needs DAGSTER_HOME named; staging and
    prod mark theirs (a file `nlp_env` in DAGSTER_HOME, when writable), and every environment
    refuses an instance marked by another. Called when a run starts (`LakeResource`'s setup,
    before any step writes) and by `dg check defs`, never on import."""
    if env.dagster_home is None:
        if env.name == "prod":
            raise InvalidEnvironment(
                "NLP_ENV=prod needs DAGSTER_HOME set explicitly: the production Dagster instance "
                "is never a default or temporary one (docs/environments.md)"
            )
        return
    marker = Path(env.dagster_home) / INSTANCE_MARKER
    try:
        owner = marker.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        owner = ""
    if owner and owner != env.name:
        raise InvalidEnvironment(
            f"DAGSTER_HOME={env.dagster_home} is the {owner} environment's Dagster instance "
            f"({marker} says so); NLP_ENV={env.name} needs its own"
        )
    if not owner and env.name != "dev":
        # a read-only DAGSTER_HOME (a ConfigMap on Kubernetes) stays unmarked
        with contextlib.suppress(OSError):
            marker.write_text(env.name + "\n", encoding="utf-8")
