import functools
import time
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from nlp_assets.engines import SPARK
from nlp_assets.engines.local import clean_days
from nlp_assets.engines.switch import EngineConfig, choose_engine, run_days
from nlp_assets.kernels.clean import CleanConfig, mark_duplicates_across_parts
from nlp_assets.lake import DAY_PART
from nlp_assets.resources.lake import LakeResource, run_part
from nlp_assets.resources.spark import SparkResource
from nlp_assets.schemas import cleaned_text_schema
from nlp_assets.stages.common import lake_sink, stage_asset, stage_result

LANGUAGES_SHOWN = 15


def _summary(docs: pl.DataFrame) -> dict[str, Any]:
    """What the stage reports of its rows, from any share of them (added up over shares)."""
    return {
        "duplicates": int(docs["is_duplicate"].sum()),
        "languages": {str(k): int(n) for k, n in docs.group_by("lang").len().iter_rows()},
    }


def _check(max_chars: int, _docs: pl.DataFrame):
    return cleaned_text_schema(max_chars)


class CleaningConfig(EngineConfig):
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
    "duplicates marked (in a micro-batch, also against the rest of its day), language detected "
    "offline; empty or over-long texts are quarantined.",
    scope="part",
    engines=True,
    quarantine=True,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def cleaned_text(
    context: dg.AssetExecutionContext,
    config: CleaningConfig,
    lake: LakeResource,
    spark: SparkResource,
    raw_text: pl.DataFrame,
):
    started = time.perf_counter()
    cleaning = CleanConfig(**config.model_dump(exclude=set(EngineConfig.model_fields)))
    engine = choose_engine(context, config, raw_text.height)
    if engine == SPARK:  # the executors write the documents into the lake, the driver commits
        from nlp_assets.engines.spark import clean_on_spark

        sink = lake_sink(context, lake, functools.partial(_check, config.max_chars), _summary)
        committed, quarantine = clean_on_spark(  # type: ignore[misc]
            spark.spark_session, raw_text, cleaning, sink=sink
        )
        summary = committed.summary
        return stage_result(
            context,
            committed,
            None,
            started=started,
            lake=lake,
            quarantine=quarantine,
            metadata={
                "engine": engine,
                "duplicates": int(summary.get("duplicates", 0)),
                "languages": dg.MetadataValue.json(_top(summary.get("languages", {}))),
            },
        )
    else:
        result = clean_days(raw_text, run_days(context), cleaning)
    docs = result.docs
    part = run_part(context)
    if part != DAY_PART:  # a micro-batch: texts the rest of its day already has are duplicates
        elsewhere = lake.lake().read_day_columns(
            "cleaned_text", context.partition_key, ["content_hash", "doc_id"], exclude_parts=[part]
        )
        docs = mark_duplicates_across_parts(docs, elsewhere)
    return stage_result(
        context,
        docs,
        cleaned_text_schema(config.max_chars),
        started=started,
        lake=lake,
        quarantine=result.quarantine,
        metadata={
            "engine": engine,
            "duplicates": int(docs["is_duplicate"].sum()),
            "languages": dg.MetadataValue.json(_top(_summary(docs)["languages"])),
        },
    )


def _top(languages: dict[str, int]) -> dict[str, int]:
    """The most frequent languages, most frequent first."""
    ranked = sorted(languages.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:LANGUAGES_SHOWN])
