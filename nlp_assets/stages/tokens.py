import time

import dagster as dg
import polars as pl

from nlp_assets.kernels.tokenize import tokenize_documents
from nlp_assets.schemas import tokens_schema
from nlp_assets.stages.common import stage_asset, stage_result
from resources.models import ModelResource


@stage_asset(
    "tokens",
    group="preprocess",
    kinds={"huggingface", "parquet"},
    description="Token ids from the embedding model's fast tokenizer, cut to the model's "
    "max length; n_tokens counts the whole text and `truncated` flags the cut.",
)
def tokens(context: dg.AssetExecutionContext, models: ModelResource, cleaned_text: pl.DataFrame):
    started = time.perf_counter()
    embedder = models.embedder
    frame = tokenize_documents(cleaned_text, embedder.tokenizer, embedder.max_length)
    return stage_result(
        context,
        frame,
        tokens_schema(),
        started=started,
        metadata={
            "tokenizer": embedder.name,
            "max_length": embedder.max_length,
            "truncated": int(frame["truncated"].sum()),
            "tokens_total": int(frame["n_tokens"].sum()),
        },
    )
