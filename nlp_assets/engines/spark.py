"""The Spark engine: the stage kernels of `nlp_assets.kernels` run through `mapInArrow`.

Every function here takes polars frames (what the lake IO manager loads), runs the SAME kernel
function as the local stage on each Arrow batch in the Spark Python workers (`pl.from_arrow`),
and returns polars frames in the stage's schema, ordered by (ingest_date, doc_id) like the
local engine. A frame may hold several days (a single-run backfill of a range): whatever a
kernel computes over a whole day is computed per `ingest_date`.

Whole-day views:
- duplicates (cleaned_text): the kernel marks duplicates within its batch; Spark then re-marks
  them over the day with a window (first doc_id per (ingest_date, content_hash)), which is the
  kernel's own rule (the smallest doc_id of equal cleaned texts is the original).
- TF-IDF (features): document frequencies and document counts per day are a Spark
  aggregation, collected and broadcast; each batch's kernel call weighs its terms with them.

Models load once per Python worker (`nlp_assets.engines.workers`) from the model resource's
plain config values.

Given a `sink` (`nlp_assets.engines.sink.LakeSink`, what a Dagster stage passes), a stage's
rows never come back to the driver: the executors write them as Parquet files into the stage's
Delta table inside the same `mapInArrow` step that computes them, the driver collects one small
row per file and commits them all in one transaction replacing the range's days, and the
function returns the commit (`Committed`) instead of a frame. Without one (the benchmark's
comparison, tests), rows are collected as polars frames.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Mapping
from datetime import date
from typing import Any

import polars as pl
import pyarrow as pa

from nlp_assets import tracing
from nlp_assets.engines import workers
from nlp_assets.engines.arrow import from_spark_arrow, spark_schema, to_batches, to_spark_arrow
from nlp_assets.engines.sink import FILE_SCHEMA, Committed, FileTarget, LakeSink, write_files
from nlp_assets.kernels.clean import CLEANED_SCHEMA, CleanConfig, CleanResult, clean_documents
from nlp_assets.kernels.features import (
    build_features,
    features_schema,
    long_ngram_frame,
    words,
)
from nlp_assets.kernels.ingest import traceparent_column
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA, predict_documents
from nlp_assets.kernels.quarantine import QUARANTINE_SCHEMA
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.kernels.tokenize import TOKENS_SCHEMA, tokenize_documents

#: Rows per Spark partition when a stage's input is spread over the cluster.
ROWS_PER_PARTITION = 2_000
ORDER = ["ingest_date", "doc_id"]

Kernel = Callable[[pl.DataFrame], pl.DataFrame]


# moving frames in and out of Spark --------------------------------------------------------------
def to_spark(spark: Any, frame: pl.DataFrame, *, rows_per_partition: int = ROWS_PER_PARTITION):
    """A polars frame as a Spark DataFrame spread over at least every core of the cluster; a
    frame of documents in ranges of (ingest_date, doc_id), so a partition holds one or two days
    (what a writing step writes is then about one file per partition, not one per day)."""
    sdf = spark.createDataFrame(to_spark_arrow(frame))
    slices = slices_for(spark, frame.height, rows_per_partition)
    if {"doc_id", "ingest_date"} <= set(frame.columns):
        return sdf.repartitionByRange(slices, "ingest_date", "doc_id")
    return sdf.repartition(slices, "doc_id") if "doc_id" in frame.columns else sdf


def slices_for(spark: Any, rows: int, rows_per_partition: int = ROWS_PER_PARTITION) -> int:
    return max(parallelism(spark), math.ceil(rows / rows_per_partition))


def is_connect(spark: Any) -> bool:
    """A Spark Connect session (`sc://` master): no SparkContext, hence no broadcast."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def parallelism(spark: Any) -> int:
    """The cluster's default parallelism; through Spark Connect (no SparkContext there) the
    server's `spark.default.parallelism` setting, 2 when it has none."""
    if is_connect(spark):
        return int(spark.conf.get("spark.default.parallelism", "2") or 2)
    return int(spark.sparkContext.defaultParallelism)


def collect(sdf: Any, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """A Spark DataFrame back on the driver in `schema`, ordered as the local engine orders."""
    frame = from_spark_arrow(sdf.toArrow(), schema)
    order = [c for c in ORDER if c in frame.columns]
    return frame.sort(order) if order else frame


def map_frames(
    sdf: Any,
    kernel: Kernel,
    in_schema: Mapping[str, pl.DataType],
    out_schema: Mapping[str, pl.DataType],
):
    """`mapInArrow` with a polars kernel: each batch arrives in `in_schema` (fixed-size arrays
    and unsigned ints restored) and leaves in Spark's Arrow types."""
    in_schema, out_schema = dict(in_schema), dict(out_schema)
    # the step's span: each executor batch is its child (the workers inherit OTEL_*)
    parent = tracing.current_traceparent()
    kernel_name = getattr(kernel, "__qualname__", type(kernel).__name__)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        traced = parent is not None and tracing.configure("nlp-spark-worker")
        context = tracing.context_of(parent) if traced else None
        for batch in batches:
            if not batch.num_rows:
                continue
            if not traced:
                yield from to_batches(kernel(from_spark_arrow(batch, in_schema)), out_schema)
                continue
            attributes = {"nlp.rows": batch.num_rows, "nlp.kernel": kernel_name}
            with tracing.span("spark batch", attributes, context=context):
                out = list(to_batches(kernel(from_spark_arrow(batch, in_schema)), out_schema))
            tracing.flush()
            yield from out

    return sdf.select(*in_schema).mapInArrow(run, spark_schema(out_schema))


ROW = "row"
REPORT = "report"
ReportingKernel = Callable[[pl.DataFrame], tuple[pl.DataFrame, pl.DataFrame]]


def map_with_reports(
    sdf: Any,
    kernel: ReportingKernel,
    in_schema: Mapping[str, pl.DataType],
    out_schema: Mapping[str, pl.DataType],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`map_frames` with a kernel that also returns its batch's report
    (`workers.batch_report`): rows and reports travel in one `mapInArrow` (as structs, the
    other one null), so the data is computed once. Returns (rows ordered as `collect`
    orders them, the reports of every batch)."""
    row_struct, report_struct = pl.Struct(dict(out_schema)), pl.Struct(workers.REPORT_SCHEMA)
    packed_schema = {ROW: row_struct, REPORT: report_struct}

    def packed(batch: pl.DataFrame) -> pl.DataFrame:
        frame, report = kernel(batch)
        frame = frame.select(list(out_schema)).cast(dict(out_schema))  # type: ignore[arg-type]
        return pl.concat(
            [
                frame.select(
                    pl.struct(pl.all()).alias(ROW), pl.lit(None, report_struct).alias(REPORT)
                ),
                report.select(
                    pl.lit(None, row_struct).alias(ROW), pl.struct(pl.all()).alias(REPORT)
                ),
            ]
        )

    both = from_spark_arrow(
        map_frames(sdf, packed, in_schema, packed_schema).toArrow(), packed_schema
    )
    rows = both.filter(pl.col(ROW).is_not_null()).select(ROW).unnest(ROW)
    rows = from_spark_arrow(rows.to_arrow(), out_schema)
    order = [c for c in ORDER if c in rows.columns]
    reports = both.filter(pl.col(REPORT).is_not_null()).select(REPORT).unnest(REPORT)
    return (rows.sort(order) if order else rows), reports


def map_to_lake(
    sdf: Any,
    kernel: ReportingKernel,
    in_schema: Mapping[str, pl.DataType],
    out_schema: Mapping[str, pl.DataType] | None,
    sink: LakeSink,
) -> tuple[Committed, pl.DataFrame]:
    """`map_with_reports` whose rows are written by the executors into `sink`'s table, in the
    same step that computes them (`out_schema`: the cast each batch gets first; None: the
    kernel's own types). The driver collects one row per file and commits them."""
    target = sink.target()
    out = None if out_schema is None else dict(out_schema)

    def writing(batch: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        frame, report = kernel(batch)
        if out is not None:
            frame = frame.select(list(out)).cast(out)  # type: ignore[arg-type]
        return write_files(frame, target), report

    files, reports = map_with_reports(sdf, writing, in_schema, FILE_SCHEMA)
    return sink.commit(files), reports


def write_rows(sdf: Any, schema: Mapping[str, pl.DataType], sink: LakeSink) -> Committed:
    """Rows Spark holds (in `schema`) written by the executors into `sink`'s table."""
    target: FileTarget = sink.target()
    files = map_frames(sdf, lambda batch: write_files(batch, target), schema, FILE_SCHEMA)
    return sink.commit(from_spark_arrow(files.toArrow(), FILE_SCHEMA))


def _report_into(metadata: dict[str, Any] | None, reports: pl.DataFrame) -> None:
    if metadata is not None:
        metadata.update(workers.spark_step_metadata(reports))


def per_day(
    frame: pl.DataFrame, kernel: Callable[[date, pl.DataFrame], pl.DataFrame]
) -> pl.DataFrame:
    """A kernel that works on one day at a time, applied to each day of the batch."""
    return pl.concat(
        [kernel(day, frame.filter(pl.col("ingest_date") == day)) for day in _days(frame)],
        how="vertical",
    )


def _days(frame: pl.DataFrame) -> list[date]:
    return sorted(frame["ingest_date"].unique().to_list())


def _schema_of(frame: pl.DataFrame, columns: list[str]) -> dict[str, pl.DataType]:
    return {c: frame.schema[c] for c in columns}


class _Shared:
    """A broadcast stand-in for Spark Connect: the value travels in the task's closure."""

    def __init__(self, value: bytes):
        self.value = value

    def unpersist(self) -> None:
        pass


def _ipc(frame: pl.DataFrame) -> bytes:
    sink = io.BytesIO()
    frame.write_ipc(sink)
    return sink.getvalue()


def _from_ipc(data: bytes) -> pl.DataFrame:
    return pl.read_ipc(io.BytesIO(data))


def read_lake(spark: Any, root: str, asset: str, days: list[str]):
    """Days of a stage from the lake as one Spark DataFrame: the files the Delta log lists for
    those days, with `ingest_date` restored from each file's partition folder (Delta keeps it
    out of the files), the same rows `Lake.read_days` gives (for Spark jobs downstream of the
    pipeline, without the Delta Spark package). Object-store roots need the URL scheme Spark's
    Hadoop file system knows (s3a://, gs://, abfss://)."""
    from pyspark.sql import functions as F

    from nlp_assets.lake import PARTITION, Lake

    lake = Lake(root)
    paths = lake.files(asset, days)
    if not paths:
        raise FileNotFoundError(f"{asset} has no files for {days} under {lake.root}")
    frame = spark.read.parquet(*paths)
    day = F.regexp_extract(F.input_file_name(), f"{PARTITION}=([0-9-]+)", 1)
    return frame.withColumn(PARTITION, F.to_date(day))


# cleaned_text -------------------------------------------------------------------------------------
DOC = "doc"
REFUSED = "refused"


def clean_on_spark(
    spark: Any, raw: pl.DataFrame, config: CleanConfig, *, sink: LakeSink | None = None
) -> CleanResult | tuple[Committed, pl.DataFrame]:
    """`clean_documents` on Spark; duplicates re-marked over each whole day. With `sink`: the
    documents written into the lake by the executors, (the commit, the quarantine) returned
    (refused rows are few: they come back to the driver)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    doc_struct = pl.Struct(CLEANED_SCHEMA)
    refused_struct = pl.Struct(QUARANTINE_SCHEMA)
    out_schema = {DOC: doc_struct, REFUSED: refused_struct}
    in_cols = ["doc_id", "source", "ingest_date", "file", "text"]
    if "traceparent" in raw.columns:  # a raw table written before traces has none
        in_cols.append("traceparent")

    def kernel(batch: pl.DataFrame) -> pl.DataFrame:
        results = [
            clean_documents(batch.filter(pl.col("ingest_date") == day), day, config)
            for day in _days(batch)
        ]
        docs = pl.concat([r.docs for r in results])
        refused = pl.concat([r.quarantine for r in results])
        return pl.concat(
            [
                docs.select(
                    pl.struct(pl.all()).alias(DOC), pl.lit(None, refused_struct).alias(REFUSED)
                ),
                refused.select(
                    pl.lit(None, doc_struct).alias(DOC), pl.struct(pl.all()).alias(REFUSED)
                ),
            ]
        )

    if not raw.height:
        empty = clean_documents(raw, date.today(), config)
        return empty if sink is None else (sink.commit_frame(empty.docs), empty.quarantine)
    mapped = map_frames(
        to_spark(spark, raw), kernel, _schema_of(raw, in_cols), out_schema
    ).persist()
    try:
        day_hash = Window.partitionBy("ingest_date", "content_hash")
        docs = (
            mapped.where(F.col(DOC).isNotNull())
            .select(f"{DOC}.*")
            .withColumn("first_doc", F.min("doc_id").over(day_hash))
            .withColumn("is_duplicate", F.col("first_doc") != F.col("doc_id"))
            .withColumn(
                "duplicate_of",
                F.when(F.col("is_duplicate"), F.col("first_doc")).otherwise(F.lit(None)),
            )
            .drop("first_doc")
        )
        refused = mapped.where(F.col(REFUSED).isNotNull()).select(f"{REFUSED}.*")
        # The kernel keeps refused rows in input order (per day): so does this engine.
        position = raw.select("doc_id").with_row_index("_position")
        quarantine = (
            collect(refused, QUARANTINE_SCHEMA)
            .join(position, on="doc_id", how="left")
            .sort("ingest_date", "_position")
            .drop("_position")
        )
        if sink is not None:
            ranged = docs.select(*CLEANED_SCHEMA).repartitionByRange(
                slices_for(spark, raw.height), "ingest_date", "doc_id"
            )
            return write_rows(ranged, CLEANED_SCHEMA, sink), quarantine
        return CleanResult(docs=collect(docs, CLEANED_SCHEMA), quarantine=quarantine)
    finally:
        mapped.unpersist()


# tokens -------------------------------------------------------------------------------------------
def tokenize_on_spark(
    spark: Any,
    cleaned: pl.DataFrame,
    model_config: dict[str, Any],
    *,
    metadata: dict[str, Any] | None = None,
    sink: LakeSink | None = None,
) -> pl.DataFrame | Committed:
    """`tokenize_documents` with the embedding model's tokenizer, loaded once per worker
    (`metadata`, when given, receives the batches' report: model loads per worker); with
    `sink`, written into the lake by the executors (the commit returned)."""

    def kernel(batch: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        before = workers.load_count()
        embedder = workers.embedder(model_config)
        frame = tokenize_documents(batch, embedder.tokenizer, embedder.read_length)
        return frame, workers.batch_report(frame.height, before)

    if not cleaned.height:
        embedder = workers.embedder(model_config)
        empty = tokenize_documents(cleaned, embedder.tokenizer, embedder.read_length)
        return empty if sink is None else sink.commit_frame(empty)
    in_cols = ["doc_id", "ingest_date", "text"]
    sdf, in_schema = to_spark(spark, cleaned), _schema_of(cleaned, in_cols)
    if sink is not None:
        committed, reports = map_to_lake(sdf, kernel, in_schema, TOKENS_SCHEMA, sink)
        _report_into(metadata, reports)
        return committed
    frame, reports = map_with_reports(sdf, kernel, in_schema, TOKENS_SCHEMA)
    _report_into(metadata, reports)
    return frame


# features -----------------------------------------------------------------------------------------
TERMS_SCHEMA = {"ingest_date": pl.Date(), "ngram": pl.String()}


def document_terms(docs: pl.DataFrame) -> pl.DataFrame:
    """(ingest_date, ngram) once per document and TF-IDF term: what document frequency counts."""
    doc_words = docs.select(words(pl.col("text")).alias("w"))["w"].to_list()
    long = long_ngram_frame(
        docs["doc_id"].to_list(), [w or [] for w in doc_words], docs["lang"].to_list()
    )
    days = docs.select("doc_id", "ingest_date")
    return (
        long.filter(pl.col("n") <= 2).join(days, on="doc_id", how="left").select(list(TERMS_SCHEMA))
    )


def features_on_spark(
    spark: Any,
    cleaned: pl.DataFrame,
    tokens: pl.DataFrame,
    model_config: dict[str, Any],
    *,
    cache_config: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    sink: LakeSink | None = None,
) -> pl.DataFrame | Committed:
    """`build_features` on Spark; TF-IDF statistics of each day aggregated and broadcast
    (with `sink`, written into the lake by the executors: the commit returned).

    With `cache_config` (`ModelCacheResource.worker_config()`), embeddings go through the
    model-result cache as on the local engine (`CachedEmbedder`, same keys): a Redis URL
    there is reached from the executors. `metadata` receives the batches' report."""
    from pyspark.sql import functions as F

    from nlp_assets.resources.model_cache import CacheStats, backend_for
    from nlp_assets.resources.models import CachedEmbedder, InferenceStats

    if not tokens.height:
        empty = build_features(cleaned, tokens, workers.embedder(model_config))
        return empty if sink is None else sink.commit_frame(empty)
    joined = tokens.select("doc_id", "ingest_date", "token_ids").join(
        cleaned.select("doc_id", "text", "lang"), on="doc_id", how="left", maintain_order="left"
    )
    in_schema = dict(joined.schema)
    docs = to_spark(spark, joined).persist()
    try:
        terms = map_frames(docs, document_terms, in_schema, TERMS_SCHEMA)
        doc_freq = collect(
            terms.groupBy("ingest_date", "ngram").agg(F.count(F.lit(1)).cast("long").alias("df")),
            TERMS_SCHEMA | {"df": pl.Int64()},
        )
        counts = collect(
            docs.groupBy("ingest_date").agg(F.count(F.lit(1)).cast("long").alias("n")),
            {"ingest_date": pl.Date(), "n": pl.Int64()},
        )
        n_docs = dict(counts.iter_rows())
        stats = (
            _Shared(_ipc(doc_freq))
            if is_connect(spark)
            else spark.sparkContext.broadcast(_ipc(doc_freq))
        )

        def kernel(batch: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
            before = workers.load_count()
            served = workers.served(model_config, "embedding")
            cache = backend_for(cache_config) if cache_config else None
            namespace = cache_config["namespace"] if cache_config else ""
            cache_stats, inference = CacheStats(), InferenceStats()
            day_freq = _from_ipc(stats.value)

            def one_day(day: date, part: pl.DataFrame) -> pl.DataFrame:
                embedder = CachedEmbedder(
                    served.model, part["text"].to_list(), cache, namespace, cache_stats, inference
                )
                return build_features(
                    part.select("doc_id", "text", "lang"),
                    part.select("doc_id", "ingest_date", "token_ids"),
                    embedder,
                    doc_freq=day_freq.filter(pl.col("ingest_date") == day).select("ngram", "df"),
                    n_docs=n_docs[day],
                )

            frame = per_day(batch, one_day)
            report = workers.batch_report(frame.height, before, cache_stats, inference, [served])
            return frame, report

        if sink is not None:  # written as the kernel made them: embeddings fixed-size
            committed, reports = map_to_lake(docs, kernel, in_schema, None, sink)
            _report_into(metadata, reports)
            stats.unpersist()
            return committed
        # Spark has no fixed-size arrays: embeddings travel as lists, their width comes back
        # from the data (the model's, whatever model the config names).
        spark_out = features_schema(1) | {"embedding": pl.List(pl.Float32())}
        frame, reports = map_with_reports(docs, kernel, in_schema, spark_out)
        _report_into(metadata, reports)
        stats.unpersist()
        dim = frame["embedding"].list.len().max() if frame.height else 0
        return frame.cast(features_schema(int(dim or 0)))  # type: ignore[arg-type]
    finally:
        docs.unpersist()


# predictions --------------------------------------------------------------------------------------
def predict_on_spark(
    spark: Any,
    cleaned: pl.DataFrame,
    features: pl.DataFrame,
    head: SentimentHead,
    model_config: dict[str, Any],
    *,
    sentiment_model_name: str,
    languages: list[str],
    cache_config: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    sink: LakeSink | None = None,
    language_models: pl.DataFrame | None = None,
) -> pl.DataFrame | Committed:
    """`predict_documents` on Spark with the models the local engine uses
        (`workers.prediction_models`: NER, a text sentiment model, A/B candidates), each loaded
        once per worker and wrapped in the result cache of `cache_config`; the sentiment head (a
        small table) travels with the task. A/B arms follow the doc_id hash, so a document gets
        the same model version on either engine. `metadata` receives the batches' report.

    `language_models` (`models_to_frame` of the per-language sentiment models): documents skipped
    for a language that has one are served by it (and by the language's entity model of the
    registry, when it has one), as the predictions stage does on the driver. With `sink`, rows are
    written into the lake by the executors and the commit is returned."""
    from nlp_assets.resources.model_cache import CacheStats, backend_for
    from nlp_assets.resources.models import InferenceStats

    head_ipc = _ipc(head.to_frame())
    languages = list(languages)
    by_language_ipc = _ipc(language_models) if language_models is not None else None

    def kernel(batch: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        before = workers.load_count()
        cache_stats, inference = CacheStats(), InferenceStats()
        chosen = workers.prediction_models(
            workers.resource(model_config),
            lambda task: workers.served(model_config, task),
            lambda name: workers.registry_model(model_config, name),
            cache=backend_for(cache_config) if cache_config else None,
            namespace=cache_config["namespace"] if cache_config else "",
            stats=cache_stats,
            inference=inference,
        )
        frame = predict_documents(
            batch.select("doc_id", "source", "lang", "is_duplicate", "text", "traceparent"),
            batch.select("doc_id", "ingest_date", "embedding"),
            SentimentHead.from_frame(_from_ipc(head_ipc)),
            chosen.ner,
            sentiment_model_name=sentiment_model_name,
            languages=languages,
            sentiment_text_model=chosen.text_model,
            sentiment_candidate=chosen.candidates.get("sentiment"),
            ner_candidate=chosen.candidates.get("entities"),
        )
        served = list(chosen.served)
        if by_language_ipc is not None:
            frame, extra = _serve_languages(frame, batch, by_language_ipc, model_config)
            served += extra
        report = workers.batch_report(frame.height, before, cache_stats, inference, served)
        return frame, report

    joined = features.select("doc_id", "ingest_date", "embedding").join(
        cleaned.select(
            "doc_id", "source", "lang", "is_duplicate", "text", traceparent_column(cleaned)
        ),
        on="doc_id",
        how="left",
        maintain_order="left",
    )
    if not features.height:
        frame, report = kernel(joined)
        _report_into(metadata, report)
        return frame if sink is None else sink.commit_frame(frame)
    sdf = to_spark(spark, joined)
    if sink is not None:
        committed, reports = map_to_lake(sdf, kernel, dict(joined.schema), PREDICTIONS_SCHEMA, sink)
        _report_into(metadata, reports)
        return committed
    frame, reports = map_with_reports(sdf, kernel, dict(joined.schema), PREDICTIONS_SCHEMA)
    _report_into(metadata, reports)
    return frame


def _serve_languages(
    frame: pl.DataFrame, batch: pl.DataFrame, models_ipc: bytes, model_config: dict[str, Any]
) -> tuple[pl.DataFrame, list[Any]]:
    """`sentiment_languages.serve_languages` in a Python worker: the per-language models
    travel with the task, the entity models load once per worker from the registry."""
    from nlp_assets.kernels.sentiment_languages import models_from_frame, predict_languages
    from nlp_assets.resources.models import ModelLoadError

    models = models_from_frame(_from_ipc(models_ipc))
    if not models:
        return frame, []
    langs = set(frame["lang"].drop_nulls().unique().to_list()) & set(models)
    entries = workers.resource(model_config).entities_by_language
    served, entity_models = [], {}
    for lang in sorted(langs):
        if not entries.get(lang):
            continue
        try:
            served.append(workers.registry_model(model_config, entries[lang]))
        except ModelLoadError:
            continue  # as on the driver: that language gets no entities
        entity_models[lang] = served[-1].model
    cleaned = batch.select("doc_id", "text")
    return predict_languages(frame, cleaned, models, entity_models), served
