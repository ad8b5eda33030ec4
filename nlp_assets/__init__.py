"""The NLP pipeline's Dagster code location (`nlp_assets.definitions`)."""

import warnings

import dagster as dg

# Set before any asset is defined. Code references, backfill policies and a few other APIs used
# here are marked beta: say so once in the docs, not on every load.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
# Deliberate: the Spark-capable stages backfill a range in one run (BackfillPolicy.single_run),
# raw text, aggregates and reports one day per run; a job mixing them (daily_pipeline, or a
# selection launched from the UI) takes the per-day policy, which is what a mixed run needs.
warnings.filterwarnings("ignore", message=r"Asset job \S+ materializes assets with varying")
