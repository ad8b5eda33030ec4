"""What the Dagster catalog shows of each lake table before any run: columns, table name, URI.

Every asset the lake IO manager stores is a Delta table at `<lake root>/<asset>` (partitioned
ones by `ingest_date`, with the lake's own `part` column; nlp_assets/lake). For each table whose
schema the code declares (`TABLES`: the pandera contracts of nlp_assets/schemas.py, and the
polars schema dicts of the model tables and the example downstream asset) this module gives:

- `dagster/column_schema`: every column with its type, its description (`COLUMN_DOCS`, one
  place), nullability, uniqueness and the pandera checks as readable constraints
  ("matches ^[0-9a-f]{16}$", "in range 0..1", "unit-norm"); plus `ingest_date` and `part`;
- `dagster/table_name` (`<environment>.lake.<asset>`: a fully qualified name, as Dagster asks,
  that never equals a warehouse table's `<schema>.<table>` in Postgres), `dagster/uri` and
  `dagster/storage_kind`;
- `column_lineage(asset_key)`: the columns that come straight from a direct daily upstream
  (same name and type in its schema), for the IO manager to add to each materialisation.

`conventions.apply` puts `table_metadata` on every spec, so the UI shows it before the first
run. Stage modules never import this module, so editing a description moves no code version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import dagster as dg
import pandera.polars as pa
import polars as pl

from nlp_assets import schemas, settings
from nlp_assets.kernels.sentiment import HEAD_SCHEMA_BASE
from nlp_assets.kernels.sentiment_languages import MODEL_SCHEMA as LANGUAGE_MODEL_SCHEMA
from nlp_assets.lake import DAY_PART, PART_COLUMN, PARTITION, QUARANTINE, Lake

TABLE_NAME = "dagster/table_name"
URI = "dagster/uri"
STORAGE_KIND = "dagster/storage_kind"
COLUMN_SCHEMA = "dagster/column_schema"
COLUMN_LINEAGE = "dagster/column_lineage"
#: Definition metadata of a stage that quarantines rows: where its quarantine table is.
QUARANTINE_URI = "quarantine_uri"
DELTA = "deltalake"
#: The resource key of the lake IO manager (nlp_assets/definitions.py): its assets are tables.
LAKE_IO_MANAGER = "lake_io_manager"

#: One description per column name, shared by every table that has the column
#: (`TABLE_COLUMN_DOCS` holds the few names that mean something else in one table).
COLUMN_DOCS: Mapping[str, str] = {
    # the lake's own
    PARTITION: "The day the document was ingested (the daily partition key; Delta partition "
    "column).",
    PART_COLUMN: "The micro-batch part this row came in; `day` for a whole-day write.",
    # documents
    "doc_id": "Stable document id: the first 16 hex digits of sha256 over source and source "
    "id (or over the text when the record has none).",
    "source": "Where the document came from: the record's `source` field, else the landing "
    "file's name (`text_files` for .txt) or the Kafka topic.",
    "source_id": "The record's own id at its source (`id` field); null when it had none.",
    "event_time": "When the source says the document was written (UTC); null when unknown.",
    "file": "Landing file the record was read from, relative to the day's landing folder (a "
    "Kafka micro-batch lands as kafka/<part>.jsonl).",
    "text": "The document text (raw as landed in raw_text; cleaned and masked from "
    "cleaned_text on).",
    "metadata": "The record's `metadata` object and any unknown fields, as JSON; null when none.",
    "traceparent": "The W3C trace context the document came with (the API request, the Kafka "
    "message's `traceparent` header, the landing record's field), else the run's that read it; "
    "null when traces are off (docs/monitoring.md).",
    "trace_id": "The document's trace id (from its `traceparent`): `nlp trace <doc_id>` and the "
    "trace backend find its path by it; null when traces were off.",
    "n_chars": "Characters in the cleaned text.",
    "content_hash": "sha256 of the cleaned text (64 hex digits): equal texts, equal hashes.",
    "is_duplicate": "The same cleaned text already came with another doc_id that day.",
    "duplicate_of": "doc_id of the day's first document with the same text; null when this "
    "is the first.",
    "lang": "ISO 639 code of the language detected offline (`und` when undetermined).",
    "lang_score": "Confidence of the language detection.",
    # tokens and features
    "token_ids": "Token ids from the embedding model's tokenizer, cut to what its windows read.",
    "n_tokens": "Tokens in the whole text (before the cut).",
    "truncated": "The text has more tokens than the model's windows read.",
    "ngrams": "Word 1-3-grams of the document with their counts (stop words dropped).",
    "tfidf_terms": "Top TF-IDF terms of the document (idf over the day) with their scores.",
    "embedding": "L2-normalised sentence embedding of the document (pooled over its windows).",
    "embedding_model": "Name of the embedding model.",
    "embedding_model_version": "Version (checkpoint hash) of the embedding model.",
    # predictions
    "sentiment_label": "Predicted sentiment, positive or negative; null when skipped.",
    "sentiment_score": "Predicted P(positive); null when skipped.",
    "sentiment_model": "Name of the sentiment model that scored the document (A/B arm).",
    "sentiment_model_version": "Version of that sentiment model.",
    "entities": "Named entities: text, label and character span in the cleaned text.",
    "ner_model": "Name of the entity model.",
    "ner_model_version": "Version of the entity model.",
    "skipped_reason": "Why no sentiment was predicted (e.g. a language without a model); null "
    "when scored.",
    # aggregates, quality, downstream
    "n_docs": "Documents in the row's group.",
    "n_duplicates": "Of those, documents marked as duplicates.",
    "n_scored": "Documents the sentiment model scored (not skipped).",
    "mean_sentiment_score": "Mean P(positive) over the group's scored documents; null when "
    "none was scored.",
    "positive_share": "Share of scored documents labelled positive; null when none was scored.",
    "top_entities": "Most frequent entities of the group (text, label, count).",
    "top_ngrams": "Most frequent word n-grams of the group (n-gram, count).",
    "label_mix": "Documents per sentiment label, `skipped` included.",
    "skipped_share": "Share of the documents without a sentiment prediction.",
    "n_quarantined": "Documents of the source quarantined that day (any stage).",
    "quarantined_share": "Quarantined documents over all the source's documents that day.",
    "entities_per_doc": "Mean number of entities per document.",
    "entities_per_100_tokens": "Entities per 100 tokens; null without tokens.",
    "baseline_days": "Days with data among the previous seven (the baseline).",
    "baseline_docs": "Documents of the source in the baseline days.",
    "baseline_positive_share": "Positive share over the baseline days; null without a baseline.",
    "baseline_skipped_share": "Skipped share over the baseline days; null without a baseline.",
    "centroid_distance": "Cosine distance of the day's embedding centroid from the baseline "
    "days' centroid; null without a baseline.",
    # reports
    "artifact": "Name of the report file (a chart, an export, the HTML page).",
    "path": "Where the file was written.",
    "format": "File format (png, html, csv, parquet...).",
    "bytes": "Size of the file in bytes.",
    # model tables
    "label": "Class label of this weight row.",
    "intercept": "Intercept of the label's logistic-regression row; null on the first label "
    "row of a binary head.",
    "kind": "Row kind: `word` or `char` n-gram term, or the `intercept` row.",
    "term": "The n-gram term the weight applies to; empty on the intercept row.",
    "idf": "Inverse document frequency of the term in the training set; null on the intercept row.",
    "labels": "The model's labels as a JSON list (the second is the positive class).",
    "config": "JSON of the analyzers, min_df and C the model was trained with.",
    "model_version": "Version of the trained model (hash of its weights and config).",
}

#: Descriptions of a column name that means something else in one table.
TABLE_COLUMN_DOCS: Mapping[str, Mapping[str, str]] = {
    "raw_text": {"text": "The document text as landed (before cleaning)."},
    "cleaned_text": {
        "text": "The cleaned text: NFKC, HTML stripped, whitespace normalised, URLs, e-mails "
        "and phone numbers masked."
    },
    "aggregates": {"n_docs": "Documents of the day with this language and sentiment label."},
    "quality": {"n_docs": "Documents of the source that day."},
    "sentiment_by_source": {"n_docs": "Documents of the source that day, duplicates left out."},
    "sentiment_model": {
        "coef": "Logistic-regression weights over the embedding dimensions; null on the first "
        "label row of a binary head.",
    },
    "sentiment_languages": {
        "lang": "Language the model serves (fr, nl).",
        "coef": "Weight of the term for the positive class (the intercept on the intercept row).",
    },
}


@dataclass(frozen=True)
class Table:
    """A lake table's declared schema: a pandera contract, or a polars schema dict with the
    columns that may be null (model tables, the downstream example). `daily`: partitioned by
    `ingest_date` (so it also holds `part`). `types`: a type shown instead of the declared
    one (the embedding's width is the configured model's)."""

    schema: Callable[[], pa.DataFrameSchema]
    daily: bool = True
    types: Mapping[str, str] = field(default_factory=dict)


def _plain(dtypes: Mapping[str, pl.DataType], nullable: Iterable[str] = ()) -> pa.DataFrameSchema:
    """A polars schema dict as a pandera schema (no checks): for tables without a contract."""
    nulls = set(nullable)
    return pa.DataFrameSchema(
        {name: pa.Column(dtype, nullable=name in nulls) for name, dtype in dtypes.items()}
    )


def _sentiment_by_source() -> pa.DataFrameSchema:
    from nlp_assets.downstream.sentiment_by_source import SENTIMENT_BY_SOURCE_SCHEMA

    return _plain(SENTIMENT_BY_SOURCE_SCHEMA, {"positive_share", "mean_sentiment_score"})


#: Every lake table whose columns the code declares, by asset name.
TABLES: Mapping[str, Table] = {
    "raw_text": Table(schemas.raw_text_schema),
    "cleaned_text": Table(schemas.cleaned_text_schema),
    "tokens": Table(schemas.tokens_schema),
    "features": Table(
        lambda: schemas.features_schema_for(1),
        types={"embedding": "Array(Float32, dim)"},  # dim: the embedding model's
    ),
    "predictions": Table(schemas.predictions_schema),
    "aggregates": Table(schemas.aggregates_schema),
    "quality": Table(schemas.quality_schema),
    "reports": Table(schemas.reports_schema),
    "sentiment_by_source": Table(_sentiment_by_source),
    "sentiment_model": Table(
        lambda: _plain({**HEAD_SCHEMA_BASE, "coef": pl.List(pl.Float64())}, {"intercept", "coef"}),
        daily=False,
    ),
    "sentiment_languages": Table(lambda: _plain(LANGUAGE_MODEL_SCHEMA, {"idf"}), daily=False),
}


def describe(table: str, column: str) -> str | None:
    """The column's description in `table` (None when nobody wrote one)."""
    return TABLE_COLUMN_DOCS.get(table, {}).get(column) or COLUMN_DOCS.get(column)


def type_name(dtype: Any) -> str:
    """A polars dtype, short: `Datetime(us, UTC)`, `List(Struct(text: String, count: Int64))`."""
    if isinstance(dtype, type):
        dtype = dtype()
    if isinstance(dtype, pl.Datetime):
        return f"Datetime({dtype.time_unit}{', ' + dtype.time_zone if dtype.time_zone else ''})"
    if isinstance(dtype, pl.Array):
        return f"Array({type_name(dtype.inner)}, {dtype.size})"
    if isinstance(dtype, pl.List):
        return f"List({type_name(dtype.inner)})"
    if isinstance(dtype, pl.Struct):
        return f"Struct({', '.join(f'{f.name}: {type_name(f.dtype)}' for f in dtype.fields)})"
    return str(dtype)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_text(check: pa.Check) -> str:
    """A pandera check as a reader would say it."""
    stats = dict(check.statistics or {})
    name = check.name
    if name == "str_matches":
        return f"matches {stats['pattern']}"
    if name == "in_range":
        low, high = _number(stats["min_value"]), _number(stats["max_value"])
        if stats.get("include_min", True) and stats.get("include_max", True):
            return f"in range {low}..{high}"
        return f"in range {'[' if stats.get('include_min', True) else '('}{low}, {high}" + (
            "]" if stats.get("include_max", True) else ")"
        )
    if name == "greater_than_or_equal_to":
        return f">= {_number(stats['min_value'])}"
    if name == "greater_than":
        return f"> {_number(stats['min_value'])}"
    if name == "less_than_or_equal_to":
        return f"<= {_number(stats['max_value'])}"
    if name == "less_than":
        return f"< {_number(stats['max_value'])}"
    if name == "isin":
        return "one of " + ", ".join(str(v) for v in sorted(stats["allowed_values"], key=str))
    if name == "notin":
        return "none of " + ", ".join(str(v) for v in sorted(stats["forbidden_values"], key=str))
    if name == "equal_to":
        return f"= {stats['value']}"
    # a custom check: its error message says what holds ("embedding is not unit-norm")
    error = str(check.error or name or "custom check")
    return error.rsplit(" is not ", 1)[-1] if " is not " in error else error


def schema_of(asset: str) -> pa.DataFrameSchema | None:
    """The declared (pandera) schema of the asset's table, None when the code declares none."""
    table = TABLES.get(asset)
    return table.schema() if table is not None else None


@cache
def column_schema(asset: str) -> dg.TableSchema | None:
    """`dagster/column_schema` of the asset's Delta table, from its declared schema: each
    column's type, description, nullability, uniqueness and checks, and the lake's
    `ingest_date` and `part` columns of a daily table; None for an undeclared table."""
    table = TABLES.get(asset)
    if table is None:
        return None
    schema = table.schema()
    columns = [
        dg.TableColumn(
            name,
            table.types.get(name) or type_name(column.dtype.type),
            description=describe(asset, name),
            constraints=dg.TableColumnConstraints(
                nullable=bool(column.nullable),
                unique=bool(column.unique),
                other=[check_text(check) for check in column.checks],
            ),
        )
        for name, column in schema.columns.items()
    ]
    if table.daily:
        if PARTITION not in schema.columns:
            columns.append(
                dg.TableColumn(
                    PARTITION,
                    "Date",
                    description=describe(asset, PARTITION),
                    constraints=dg.TableColumnConstraints(nullable=False),
                )
            )
        columns.append(
            dg.TableColumn(
                PART_COLUMN,
                "String",
                description=describe(asset, PART_COLUMN),
                constraints=dg.TableColumnConstraints(
                    nullable=False, other=[f"`{DAY_PART}` or a micro-batch part name"]
                ),
            )
        )
    unique = schema.unique if isinstance(schema.unique, list) else []
    constraints = (
        dg.TableConstraints(other=[f"unique ({', '.join(unique)})"]) if len(unique) > 1 else None
    )
    return dg.TableSchema(columns=columns, constraints=constraints)


def materialized_column_schema(asset_key: dg.AssetKey, frame: pl.DataFrame) -> dg.TableSchema:
    """`dagster/column_schema` of one materialisation of `asset_key` (for the IO manager): the
    declared schema with each column typed from `frame` (the embedding's real width), then any
    column `frame` has that the schema does not declare, typed only; the lake's `ingest_date`
    and `part` stay. An undeclared asset: `frame`'s columns and types."""
    declared = column_schema(asset_key.to_user_string())
    types = {name: type_name(dtype) for name, dtype in frame.schema.items()}
    if declared is None:
        return dg.TableSchema(columns=[dg.TableColumn(name, t) for name, t in types.items()])
    known = {column.name for column in declared.columns}
    columns = [
        dg.TableColumn(
            column.name,
            types.get(column.name, column.type),
            description=column.description,
            constraints=column.constraints,
        )
        for column in declared.columns
        if column.name in types or column.name in (PARTITION, PART_COLUMN)
    ]
    columns += [dg.TableColumn(name, t) for name, t in types.items() if name not in known]
    return dg.TableSchema(columns=columns, constraints=declared.constraints)


def lake_assets(assets: Iterable[Any]) -> frozenset[str]:
    """Names of the assets of `assets` (AssetsDefinitions; specs are skipped) that the lake IO
    manager stores: each is a Delta table at `<lake root>/<asset>`."""
    return frozenset(
        key.to_user_string()
        for assets_def in assets
        if isinstance(assets_def, dg.AssetsDefinition)
        for key in assets_def.keys
        if assets_def.get_io_manager_key_for_asset_key(key) == LAKE_IO_MANAGER
    )


def table_name(asset: str, environment: str) -> str:
    """`dagster/table_name`: `<environment>.lake.<asset>` (quarantine:
    `<environment>.lake_quarantine.<stage>`), fully qualified as Dagster recommends and
    distinct from the warehouse's Postgres tables (`nlp.predictions`)."""
    schema, _, name = asset.rpartition("/")
    return f"{environment}.lake{'_' + schema if schema else ''}.{name}"


def table_metadata(
    asset: str,
    *,
    quarantine: bool = False,
    lake_root: str | None = None,
    environment: str | None = None,
) -> dict[str, Any]:
    """Definition metadata of the lake table of `asset` (an asset the lake IO manager
    stores): its name, URI and storage kind, its column schema when `TABLES` declares it, and
    the quarantine table's URI when the stage quarantines rows (`quarantine`). `lake_root` and
    `environment` default to the environment's (`NLP_ENV`, `NLP_LAKE_DIR`)."""
    lake = Lake(lake_root or settings.lake_dir())
    metadata: dict[str, Any] = {
        TABLE_NAME: table_name(asset, environment or settings.environment_name()),
        URI: lake.table_uri(asset),
        STORAGE_KIND: DELTA,
    }
    schema = column_schema(asset)
    if schema is not None:
        metadata[COLUMN_SCHEMA] = schema
    if quarantine:
        metadata[QUARANTINE_URI] = dg.MetadataValue.path(lake.table_uri(f"{QUARANTINE}/{asset}"))
    return metadata


# --- column lineage: runtime metadata, added by the IO manager ---------------------------------


@cache
def _daily_upstreams() -> Mapping[str, tuple[str, ...]]:
    """Direct upstreams of each catalogued daily table that are daily tables too (rows flow
    between those; an unpartitioned model table feeds weights, not columns), from the code
    location's asset definitions."""
    from nlp_assets.definitions import asset_definitions  # the code location; loaded lazily

    ups: dict[str, tuple[str, ...]] = {}
    for assets_def in asset_definitions:
        for key, deps in assets_def.asset_deps.items():
            name = key.to_user_string()
            ups[name] = tuple(
                sorted(
                    dep.to_user_string()
                    for dep in deps
                    if dep.to_user_string() in TABLES and TABLES[dep.to_user_string()].daily
                )
            )
    return ups


def column_lineage(
    asset_key: dg.AssetKey, upstreams: Iterable[dg.AssetKey | str] | None = None
) -> dg.TableColumnLineage | None:
    """`dagster/column_lineage` of a materialisation of `asset_key`: each of its columns that
    a direct daily upstream's declared schema has with the same name and type depends on that
    upstream column (doc_id, ingest_date, source, lang... from cleaned_text to tokens,
    features, predictions). None when the asset is not a catalogued daily table or no column
    comes from upstream. `upstreams`: the direct upstreams (default: the asset's deps in the
    code location, daily tables only)."""
    asset = asset_key.to_user_string()
    table = TABLES.get(asset)
    if table is None or not table.daily:
        return None
    if upstreams is None:
        names: Iterable[str] = _daily_upstreams().get(asset, ())
    else:
        names = sorted(
            up.to_user_string() if isinstance(up, dg.AssetKey) else up for up in upstreams
        )
    columns = _dtypes(asset)
    deps: dict[str, list[dg.TableColumnDep]] = {}
    for upstream in names:
        theirs = _dtypes(upstream) if upstream in TABLES and TABLES[upstream].daily else {}
        for name, dtype in columns.items():
            if name != PART_COLUMN and theirs.get(name) == dtype:  # `part`: the lake's own
                deps.setdefault(name, []).append(
                    dg.TableColumnDep(
                        asset_key=dg.AssetKey.from_user_string(upstream), column_name=name
                    )
                )
    return dg.TableColumnLineage(deps_by_column=deps) if deps else None


@cache
def _dtypes(asset: str) -> Mapping[str, str]:
    """Column name -> type as shown in the catalog (the embedding's shown type, not width 1)."""
    schema = column_schema(asset)
    return {column.name: column.type for column in schema.columns} if schema else {}
