import time
from datetime import date

import dagster as dg
import polars as pl
from pydantic import Field

from nlp_assets.kernels.clean import CleanConfig, clean_documents
from nlp_assets.schemas import cleaned_text_schema
from nlp_assets.stages.common import stage_asset, stage_result
from resources.lake import LakeResource


class CleaningConfig(dg.Config):
    mask_urls: bool = Field(default=True, description="Replace URLs with [URL].")
    mask_emails: bool = Field(default=True, description="Replace e-mail addresses with [EMAIL].")
    mask_phones: bool = Field(default=True, description="Replace phone numbers with [PHONE].")
    min_chars: int = Field(default=1, description="Shorter cleaned texts are quarantined.")
    max_chars: int = Field(default=100_000, description="Longer cleaned texts are quarantined.")


@stage_asset(
    "cleaned_text",
    group="preprocess",
    kinds={"polars", "parquet"},
    description="NFKC, HTML stripped, whitespace normalised, URLs/e-mails/phones masked, exact "
    "duplicates marked, language detected offline; empty or over-long texts are quarantined.",
)
def cleaned_text(
    context: dg.AssetExecutionContext,
    config: CleaningConfig,
    lake: LakeResource,
    raw_text: pl.DataFrame,
):
    started = time.perf_counter()
    result = clean_documents(
        raw_text, date.fromisoformat(context.partition_key), CleanConfig(**config.model_dump())
    )
    docs = result.docs
    return stage_result(
        context,
        docs,
        cleaned_text_schema(config.max_chars),
        started=started,
        lake=lake,
        quarantine=result.quarantine,
        metadata={
            "duplicates": int(docs["is_duplicate"].sum()),
            "languages": dg.MetadataValue.json(
                dict(docs.group_by("lang").len().sort("len", descending=True).head(15).iter_rows())
            ),
        },
    )
