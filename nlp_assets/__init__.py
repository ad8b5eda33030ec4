"""The NLP pipeline's Dagster code location (`nlp_assets.definitions`)."""
