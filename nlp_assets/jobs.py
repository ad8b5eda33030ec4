import dagster as dg

PIPELINE_GROUPS = ("ingest", "preprocess", "features", "inference", "analytics")

daily_pipeline_job = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.groups(*PIPELINE_GROUPS),
    description="The seven stages, raw text to report, for one ingestion day. Backfill a date "
    "range from the asset graph or this job's Partitions tab.",
)

train_sentiment_job = dg.define_asset_job(
    "train_sentiment_model",
    selection=dg.AssetSelection.assets("sentiment_model"),
    description="Train and evaluate the sentiment head (needed once before the first day).",
)
