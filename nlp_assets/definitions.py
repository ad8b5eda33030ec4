"""The code location: every asset, check, job, schedule, sensor and resource of the pipeline."""

import warnings

import dagster as dg

# In the processes that load the code location (code server, run workers, `dg check defs`), not
# in whoever imports `nlp_assets` (the API, `nlp_assets.read`): code references, backfill
# policies and a few other APIs used here are beta, said once in the docs rather than on every
# load; and deliberately, the Spark-capable stages backfill a range in one run
# (BackfillPolicy.single_run), raw text, aggregates and reports one day per run, so a job mixing
# them (daily_pipeline, or a selection launched from the UI) takes the per-day policy. Set
# before the stage modules below define their assets.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", message=r"Asset job \S+ materializes assets with varying")

from nlp_assets import conventions, logs, settings
from nlp_assets.checks import all_checks
from nlp_assets.downstream import sentiment_by_source
from nlp_assets.executor import executor_from_env
from nlp_assets.jobs import (
    backfill_pipeline_spark_job,
    daily_pipeline_job,
    train_finetuned_job,
    train_sentiment_job,
    warehouse_load_job,
)
from nlp_assets.kafka import topics as kafka_topics
from nlp_assets.kafka.resource import kafka_from_env
from nlp_assets.kafka.sensors import kafka_sensors
from nlp_assets.lake.jobs import maintenance_jobs, maintenance_schedules, maintenance_sensors
from nlp_assets.resources.folders import DayFolder
from nlp_assets.resources.lake import LakeIOManager, LakeResource
from nlp_assets.resources.model_cache import model_cache_from_env
from nlp_assets.resources.models import DEFAULT_EMBEDDING_MODEL, DEFAULT_NER_MODEL, models_from_env
from nlp_assets.resources.spark import spark_from_env
from nlp_assets.resources.warehouse import warehouse_from_env
from nlp_assets.schedules import (
    daily_pipeline_schedule,
    daily_reports_schedule,
    freshness_checks_schedule,
)
from nlp_assets.sensors.alerts import run_failure_alert_sensor
from nlp_assets.sensors.landing import landing_folder_sensor
from nlp_assets.stages import stage_assets
from nlp_assets.warehouse.assets import warehouse_assets


def build_resources(
    *, lake_dir: str | None = None, landing_dir: str | None = None, reports_dir: str | None = None
) -> dict[str, object]:
    """Resources of the environment `NLP_ENV` selects (docs/environments.md,
    docs/settings.md); arguments override folders."""
    env = settings.environment()
    lake = LakeResource(root=lake_dir or env.lake_dir)
    return {
        "lake": lake,
        "lake_io_manager": LakeIOManager(lake=lake),
        "landing": DayFolder(root=landing_dir or env.landing_dir),
        "report_folder": DayFolder(root=reports_dir or env.reports_dir),
        "models": models_from_env(lake.root),
        "model_cache": model_cache_from_env(),
        # Postgres warehouse tables: DATABASE_URL (an EnvVar); unset, the lake alone.
        "warehouse": warehouse_from_env(),
        # KAFKA_* variables (docs/kafka.md); nothing connects until a Kafka sensor or run.
        "kafka": kafka_from_env(),
        # NLP_SPARK_MASTER / NLP_SPARK_CONF; the session starts only when a stage uses Spark.
        "spark": spark_from_env(),
    }


def model_identities() -> dict[str, list[str]]:
    """The models each stage runs, as they enter its code version (nlp_assets/conventions.py):
    the embedder's checkpoint and window settings, the NER pipeline, the A/B share."""
    embedder = [
        settings.embedding_model_path() or DEFAULT_EMBEDDING_MODEL,
        f"windows={settings.embedding_max_windows()}",
    ]
    return {
        "tokens": embedder[:1],  # the embedder's own tokenizer
        "features": embedder,
        "predictions": [
            settings.ner_model() or DEFAULT_NER_MODEL,
            f"sentiment_ab_share={settings.sentiment_ab_share()}",
        ],
    }


#: The materialisable assets, before the conventions pass.
asset_definitions = [
    *stage_assets(),
    *warehouse_assets,
    sentiment_by_source.sentiment_by_source_asset,
]
all_assets = conventions.apply(
    conventions.with_source_code_references(asset_definitions),
    conventions.code_versions(asset_definitions, model_identities()),
)
topic_specs = conventions.apply(kafka_topics.topic_specs, {})

# This process's console lines (code server, run and step workers) in NLP_LOG_FORMAT, redacted.
logs.configure()

if settings.get().validating_definitions:  # `dg check defs`; runs check in LakeResource's setup
    settings.check_instance(settings.environment())  # this environment's own Dagster instance

defs = dg.Definitions(
    assets=[*all_assets, *topic_specs],  # topics: external, upstream of raw
    jobs=[
        daily_pipeline_job,
        train_sentiment_job,
        train_finetuned_job,
        warehouse_load_job,
        backfill_pipeline_spark_job,
        *maintenance_jobs,
    ],
    asset_checks=all_checks,
    schedules=[
        daily_pipeline_schedule,
        daily_reports_schedule,
        freshness_checks_schedule,
        *maintenance_schedules,
    ],
    sensors=[
        landing_folder_sensor,
        run_failure_alert_sensor,
        *kafka_sensors,
        *maintenance_sensors,
    ],
    resources=build_resources(),
    executor=executor_from_env(all_assets),  # NLP_EXECUTOR=k8s: one pod per step
)
