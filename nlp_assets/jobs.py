import dagster as dg

from nlp_assets.checks import daily_partition_freshness
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import ENGINE_STAGES, PIPELINE

# Stages are chosen by their tags (nlp_assets/stages/common.py), never by a list of names.
daily_pipeline_job = dg.define_asset_job(
    "daily_pipeline",
    # the freshness checks judge "yesterday by 03:00", not this run's day: their own schedule
    selection=PIPELINE - dg.AssetSelection.checks(daily_partition_freshness),
    description="The eight stages, raw text to report (quality included), for one ingestion "
    "day. Backfill a date range from the asset graph or this job's Partitions tab.",
)

train_sentiment_job = dg.define_asset_job(
    "train_sentiment_model",
    selection=dg.AssetSelection.assets("sentiment_model", "sentiment_languages"),
    description="Train and evaluate the sentiment head (needed once before the first day) "
    "and the fr/nl models.",
)

# Minutes of CPU (docs/models.md "Fine-tuned classifier"): a job of its own, run when wanted
# (on a GPU: NLP_FINETUNE_DEVICE=cuda); until it passes its floors the head serves everything.
train_finetuned_job = dg.define_asset_job(
    "train_finetuned_sentiment",
    selection=dg.AssetSelection.assets("sentiment_finetuned"),
    description="Fine-tune MiniLM on the labelled set: the sentiment A/B candidate against the "
    "head, served once its held-out figures pass the floors.",
)

warehouse_load_job = dg.define_asset_job(
    "warehouse_load",
    selection=dg.AssetSelection.groups("warehouse"),
    description="Copy a day's documents, predictions and aggregates from the lake into the "
    "Postgres warehouse tables (needs DATABASE_URL; skips with a warning without it).",
)

backfill_pipeline_spark_job = dg.define_asset_job(
    "backfill_pipeline_spark",
    selection=ENGINE_STAGES,
    # the stages that run on either engine (nlp_assets.engines); their backfills are single runs
    config={"ops": {name: {"config": {"engine": "spark"}} for name in stage_names(ENGINE_STAGES)}},
    tags={"nlp/engine": "spark"},
    description="cleaned_text to predictions on the Spark engine (the `spark` resource) for a "
    "range of days in one run: materialise raw_text for those days first, then launch this job "
    "with a partition range. Small inputs (< spark_min_docs) still run in-process.",
)
