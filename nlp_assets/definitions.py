"""The code location: every asset, check, job, schedule, sensor and resource of the pipeline."""

import os
import warnings

import dagster as dg

from nlp_assets import settings
from nlp_assets.jobs import daily_pipeline_job, train_sentiment_job
from nlp_assets.schedules import daily_pipeline_schedule
from nlp_assets.stages import (
    aggregates,
    cleaned_text,
    features,
    predictions,
    raw_text,
    reports,
    sentiment_model,
    tokens,
)
from resources.folders import DayFolder
from resources.lake import LakeIOManager, LakeResource
from resources.models import DEFAULT_NER_MODEL, ModelResource
from sensors.landing import landing_folder_sensor

# Code references and a few APIs used here are marked beta; say so once, not on every load.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

STAGE_MODULES = [raw_text, cleaned_text, tokens, features, predictions, aggregates, reports]


def build_resources(
    *, lake_dir: str | None = None, landing_dir: str | None = None, reports_dir: str | None = None
) -> dict[str, object]:
    """Resources from the environment (see README "Settings"); arguments override folders."""
    lake = LakeResource(root=lake_dir or settings.lake_dir())
    return {
        "lake": lake,
        "lake_io_manager": LakeIOManager(lake=lake),
        "landing": DayFolder(root=landing_dir or settings.landing_dir()),
        "report_folder": DayFolder(root=reports_dir or settings.reports_dir()),
        "models": ModelResource(
            embedding_model_path=os.getenv("NLP_EMBEDDING_MODEL_PATH", ""),
            ner_model=os.getenv("NLP_NER_MODEL", DEFAULT_NER_MODEL),
            device=os.getenv("NLP_DEVICE", "auto"),
        ),
    }


all_assets = dg.with_source_code_references(
    dg.load_assets_from_modules([*STAGE_MODULES, sentiment_model])
)

defs = dg.Definitions(
    assets=all_assets,
    jobs=[daily_pipeline_job, train_sentiment_job],
    schedules=[daily_pipeline_schedule],
    sensors=[landing_folder_sensor],
    resources=build_resources(),
)
