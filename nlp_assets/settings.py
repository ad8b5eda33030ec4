"""Where things live, from environment variables (none is a secret; each has a default, except
the folders and instance of `NLP_ENV=prod`: see `environment()` and docs/environments.md)."""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path


def data_dir() -> Path:
    return Path(os.getenv("NLP_DATA_DIR", "data")).resolve()


def landing_dir() -> str:
    """`NLP_LANDING_DIR`, else the environment's own (dev: `data/landing`)."""
    return environment().landing_dir


def lake_dir() -> str:
    """`NLP_LAKE_DIR`, else the environment's own (dev: `data/lake`)."""
    return environment().lake_dir


def reports_dir() -> str:
    """`NLP_REPORTS_DIR`, else the environment's own (dev: `data/reports`)."""
    return environment().reports_dir


def labelled_sentiment_path() -> str:
    return os.getenv("NLP_LABELLED_SENTIMENT", str(data_dir() / "labelled" / "sentiment.parquet"))


#: Default of `NLP_EMBEDDING_MAX_WINDOWS` (docs/models.md "Long documents").
EMBEDDING_MAX_WINDOWS = 4


def embedding_max_windows() -> int:
    """`NLP_EMBEDDING_MAX_WINDOWS`: the most windows a long document is embedded in (1: only
    its first window, as before windowing); the rest of its text is not read."""
    value = int(os.getenv("NLP_EMBEDDING_MAX_WINDOWS", str(EMBEDDING_MAX_WINDOWS)))
    if value < 1:
        raise ValueError(f"NLP_EMBEDDING_MAX_WINDOWS must be >= 1, got {value}")
    return value


def configured(name: str, default: str) -> str:
    """A resource field from variable `name`: `dg.EnvVar(name)` when it is set, so the UI and
    run config show the variable's name (Dagster reads its value at run time), else `default`."""
    import dagster as dg

    return dg.EnvVar(name) if os.getenv(name) else default


# Models (docs/models.md): the default entries of the model resource.
def embedding_model_path() -> str:
    """`NLP_EMBEDDING_MODEL_PATH`: folder of an encoder checkpoint ('' = bundled MiniLM)."""
    return os.getenv("NLP_EMBEDDING_MODEL_PATH", "")


def ner_model() -> str:
    """`NLP_NER_MODEL`: installed spaCy pipeline package or folder ('' = the default)."""
    return os.getenv("NLP_NER_MODEL", "")


def ner_processes() -> int:
    """`NLP_NER_PROCESSES`: forked worker processes spaCy NER runs a large call in
    (`EntityRecognizer`); 0 (default): one per CPU core this process may use; 1: in-process."""
    value = int(os.getenv("NLP_NER_PROCESSES", "0"))
    if value < 0:
        raise ValueError(f"NLP_NER_PROCESSES must be >= 0, got {value}")
    return value or len(os.sched_getaffinity(0))


def model_device() -> str:
    """`NLP_DEVICE`: 'auto' (CUDA when present), 'cpu' or 'cuda'."""
    return os.getenv("NLP_DEVICE", "auto")


def cache_ttl_seconds() -> int:
    """`NLP_CACHE_TTL_SECONDS`: how long a cached model result lives in Redis (30 days)."""
    return int(os.getenv("NLP_CACHE_TTL_SECONDS", str(30 * 86_400)))


# Where steps run (docs/production.md) and where metrics go (docs/monitoring.md).
def executor_choice() -> str:
    """`NLP_EXECUTOR`: 'default' (Dagster's multiprocess executor) or 'k8s' (a pod per step)."""
    return os.getenv("NLP_EXECUTOR", "default")


def k8s_executor_config_path() -> str:
    """`NLP_K8S_EXECUTOR_CONFIG`: the step-pod profiles ('' = deploy/k8s/executor.yaml)."""
    return os.getenv("NLP_K8S_EXECUTOR_CONFIG", "")


def spark_master() -> str:
    """`NLP_SPARK_MASTER`: local[*] (default), spark://host:7077 or sc://host:15002."""
    return os.getenv("NLP_SPARK_MASTER", "local[*]")


def spark_conf() -> str:
    """`NLP_SPARK_CONF`: a JSON object of Spark settings ('' = none)."""
    return os.getenv("NLP_SPARK_CONF", "").strip()


def pushgateway_url() -> str | None:
    """`PROMETHEUS_PUSHGATEWAY`: host:port of a Pushgateway; unset, metrics go to text files."""
    return os.getenv("PROMETHEUS_PUSHGATEWAY") or None


def metrics_textfile_dir() -> Path:
    """`NLP_METRICS_TEXTFILE_DIR`: the node exporter's text-file folder (<data>/metrics)."""
    return Path(os.getenv("NLP_METRICS_TEXTFILE_DIR", str(data_dir() / "metrics")))


# The fine-tuned sentiment classifier (docs/models.md "Fine-tuned classifier").
def finetuned_sentiment_dir(lake: str | None = None) -> str:
    """`NLP_FINETUNED_SENTIMENT_DIR`: local folder of the fine-tuned checkpoints
    (`<version>/` and `CURRENT`); default `<lake>/sentiment_finetuned` for a local lake (set it
    when the lake is on object storage: Hugging Face loads checkpoints from local files)."""
    lake = lake or lake_dir()
    default = f"{lake.removeprefix('file://')}/sentiment_finetuned"
    return os.getenv("NLP_FINETUNED_SENTIMENT_DIR", default)


def finetune_epochs() -> int:
    """`NLP_FINETUNE_EPOCHS`: passes over the training rows (2)."""
    return int(os.getenv("NLP_FINETUNE_EPOCHS", "2"))


def finetune_max_rows() -> int:
    """`NLP_FINETUNE_MAX_ROWS`: training rows used, a stratified sample (2000 of 3636; 0 =
    all), to keep `make run` within minutes on a 2-core CPU."""
    return int(os.getenv("NLP_FINETUNE_MAX_ROWS", "2000"))


def finetune_device() -> str:
    """`NLP_FINETUNE_DEVICE`: 'cpu' (default: same bytes on every run), 'cuda' or 'auto'."""
    return os.getenv("NLP_FINETUNE_DEVICE", "cpu")


def sentiment_ab_share() -> float:
    """`NLP_SENTIMENT_AB_SHARE`: share of documents the fine-tuned classifier serves as the A/B
    candidate against the logistic head (0 switches the A/B test off)."""
    return float(os.getenv("NLP_SENTIMENT_AB_SHARE", "0.5"))


def partitions_start() -> str:
    return os.getenv("NLP_PARTITIONS_START", "2026-01-01")


# Landing-file ingest caps (nlp_assets/kernels/ingest.py), checked before anything is parsed.
def ingest_max_file_bytes() -> int:
    """`NLP_INGEST_MAX_FILE_BYTES`: a larger landing file is one quarantine row (256 MiB)."""
    return int(os.getenv("NLP_INGEST_MAX_FILE_BYTES", str(256 * 1024 * 1024)))


def ingest_max_record_bytes() -> int:
    """`NLP_INGEST_MAX_RECORD_BYTES`: the most a JSONL line, CSV row, Parquet cell or TXT file
    may hold (4 MiB); a larger one is quarantined, its raw bytes cut to this."""
    return int(os.getenv("NLP_INGEST_MAX_RECORD_BYTES", str(4 * 1024 * 1024)))


# Kafka (docs/kafka.md): connection settings are read by `kafka.resource.kafka_from_env`;
# topics, batching and the message size limit here.
def kafka_topics() -> list[tuple[str, int]]:
    """`NLP_KAFKA_TOPICS`: comma-separated `topic[:priority]` (one sensor per topic), each
    name given without, and returned with, the environment's topic prefix."""
    env = environment()
    topics = []
    for item in os.getenv("NLP_KAFKA_TOPICS", "nlp-documents").split(","):
        name, _, priority = item.strip().partition(":")
        if name:
            topics.append((env.topic(name), int(priority or 0)))
    return topics


def kafka_extra_config() -> dict[str, str]:
    """`KAFKA_EXTRA_CONFIG`: a JSON object of more librdkafka settings (`{}`); the other
    `KAFKA_*` variables become `dg.EnvVar` fields in `kafka.resource.kafka_from_env`."""
    return json.loads(os.getenv("KAFKA_EXTRA_CONFIG", "{}"))


def kafka_max_messages_per_run() -> int:
    return int(os.getenv("NLP_KAFKA_MAX_MESSAGES_PER_RUN", "5000"))


def kafka_max_runs_per_tick() -> int:
    return int(os.getenv("NLP_KAFKA_MAX_RUNS_PER_TICK", "10"))


def kafka_sensor_interval_seconds() -> int:
    """`NLP_KAFKA_SENSOR_INTERVAL_SECONDS`: the least time between two ticks of a topic sensor."""
    return int(os.getenv("NLP_KAFKA_SENSOR_INTERVAL_SECONDS", "30"))


def kafka_max_message_bytes() -> int:
    return int(os.getenv("NLP_KAFKA_MAX_MESSAGE_BYTES", str(64 * 1024)))


def kafka_range_max_attempts() -> int:
    """Requests of a range whose runs fail before one more in dead-letter mode."""
    return int(os.getenv("NLP_KAFKA_RANGE_MAX_ATTEMPTS", "3"))


def kafka_range_retry_backoff_seconds() -> float:
    """Wait after a range's first failure before its next request (doubles each attempt)."""
    return float(os.getenv("NLP_KAFKA_RANGE_RETRY_BACKOFF_SECONDS", "60"))


def kafka_day_refresh_minutes() -> float:
    """`NLP_KAFKA_DAY_REFRESH_MINUTES` (10): the least time between two micro-batches of a topic
    that also refresh the day's quality figures, aggregates and report; 0 = every micro-batch."""
    return float(os.getenv("NLP_KAFKA_DAY_REFRESH_MINUTES", "10"))


def kafka_max_outstanding_ranges() -> int:
    """Ranges requested and not yet succeeded a sensor keeps track of; no new ones past it."""
    return int(os.getenv("NLP_KAFKA_MAX_OUTSTANDING_RANGES", "100"))


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
    name = os.getenv("NLP_ENV", "").strip() or "dev"
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
    for field, variable in ENVIRONMENT_VARIABLES.items():
        if os.getenv(variable, "").strip():
            values[field] = os.environ[variable].strip()
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
        dagster_home=os.getenv("DAGSTER_HOME", "").strip() or None,
        **values,  # type: ignore[arg-type]
    )


def check_instance(env: Environment) -> None:
    """Each environment has its own Dagster instance. Prod needs DAGSTER_HOME named; staging and
    prod mark theirs (a file `nlp_env` in DAGSTER_HOME, when writable), and every environment
    refuses an instance marked by another. Called once, when the code location loads."""
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
