import dagster as dg

from nlp_assets.checks import daily_partition_freshness

PIPELINE_GROUPS = ("ingest", "preprocess", "features", "inference", "analytics")
#: The pipeline's stages that always compute the whole day (asset metadata SCOPE_DAY), even in a
#: micro-batch run; the others compute the run's part. Kafka micro-batches refresh these at most
#: every NLP_KAFKA_DAY_REFRESH_MINUTES, and the topic's sensor once more after the day closed.
DAY_STAGES = ("quality", "aggregates", "reports")

daily_pipeline_job = dg.define_asset_job(
    "daily_pipeline",
    # the freshness checks judge "yesterday by 03:00", not this run's day: their own schedule
    selection=dg.AssetSelection.groups(*PIPELINE_GROUPS)
    - dg.AssetSelection.checks(daily_partition_freshness),
    description="The seven stages, raw text to report, for one ingestion day. Backfill a date "
    "range from the asset graph or this job's Partitions tab.",
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

#: The stages that run on either engine (nlp_assets.engines); their backfills are single runs.
ENGINE_STAGES = ("cleaned_text", "tokens", "features", "predictions")

backfill_pipeline_spark_job = dg.define_asset_job(
    "backfill_pipeline_spark",
    selection=dg.AssetSelection.assets(*ENGINE_STAGES),
    config={"ops": {stage: {"config": {"engine": "spark"}} for stage in ENGINE_STAGES}},
    tags={"nlp/engine": "spark"},
    description="cleaned_text to predictions on the Spark engine (the `spark` resource) for a "
    "range of days in one run: materialise raw_text for those days first, then launch this job "
    "with a partition range. Small inputs (< spark_min_docs) still run in-process.",
)
