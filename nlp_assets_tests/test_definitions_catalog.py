"""What the Dagster catalog shows before any run (nlp_assets/catalog.py): every lake table's
name and URI, every declared table's columns with a description, type, nullability and checks,
and the column lineage the IO manager adds to each materialisation.

Only the definitions are loaded: no run, no instance, no file of the lake is read.
"""

from __future__ import annotations

import dagster as dg
import pandera.polars as pa
import polars as pl
import pytest

from nlp_assets import catalog, conventions, settings
from nlp_assets.definitions import asset_definitions, defs
from nlp_assets.lake import PART_COLUMN, PARTITION, Lake
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import PIPELINE, QUARANTINE_STAGES
from nlp_assets.warehouse.load import TABLES as WAREHOUSE_TABLES


@pytest.fixture(scope="module")
def specs() -> dict[str, dg.AssetSpec]:
    graph = defs.resolve_asset_graph()
    return {
        spec.key.to_user_string(): spec
        for assets_def in graph.assets_defs
        for spec in assets_def.specs
    }


def _schema(spec: dg.AssetSpec) -> dg.TableSchema:
    schema = spec.metadata.get(catalog.COLUMN_SCHEMA)
    assert isinstance(schema, dg.TableSchema), f"{spec.key.to_user_string()} has no column schema"
    return schema


def test_every_stage_documents_its_columns_before_any_run(specs) -> None:
    stages = stage_names(PIPELINE)
    assert stages, "no pipeline stage found"
    for stage in stages:
        spec = specs[stage]
        schema = _schema(spec)
        declared = catalog.schema_of(stage)
        assert declared is not None, stage
        columns = {column.name: column for column in schema.columns}
        # every column of the pandera contract, plus the lake's partition and part columns
        assert set(columns) == {*declared.columns, PARTITION, PART_COLUMN}, stage
        for name, column in columns.items():
            assert column.description and column.description.strip(), f"{stage}.{name}"
            assert column.type, f"{stage}.{name}"
        for name, contract in declared.columns.items():
            assert columns[name].constraints.nullable == contract.nullable, f"{stage}.{name}"
            assert columns[name].constraints.unique == contract.unique, f"{stage}.{name}"
            assert len(columns[name].constraints.other) == len(contract.checks), f"{stage}.{name}"
        assert not columns[PARTITION].constraints.nullable
        assert columns[PART_COLUMN].type == "String"
        assert not columns[PART_COLUMN].constraints.nullable
        assert "`day`" in (columns[PART_COLUMN].description or "")


def test_every_lake_table_has_a_table_name_and_uri_under_the_lake_root(specs) -> None:
    lake = Lake(settings.lake_dir())
    env = settings.environment_name()
    lake_assets = catalog.lake_assets(asset_definitions)
    assert set(stage_names(PIPELINE)) <= lake_assets
    assert set(catalog.TABLES) <= lake_assets, "a catalogued table the lake does not store"
    for name in lake_assets:
        metadata = specs[name].metadata
        assert metadata[catalog.TABLE_NAME] == f"{env}.lake.{name}", name
        assert metadata[catalog.URI] == lake.table_uri(name), name
        assert metadata[catalog.STORAGE_KIND] == "deltalake", name
    for name, spec in specs.items():  # warehouse tables, Kafka topics: not lake tables
        if name not in lake_assets:
            assert catalog.TABLE_NAME not in spec.metadata, name
            assert catalog.URI not in spec.metadata, name


def test_table_names_are_unique_and_never_a_warehouse_table(specs) -> None:
    names = [
        spec.metadata[catalog.TABLE_NAME]
        for spec in specs.values()
        if catalog.TABLE_NAME in spec.metadata
    ]
    assert len(names) == len(set(names))
    warehouse = {
        f"{schema}.{table}"
        for schema in ("nlp", "nlp_staging", "nlp_prod")
        for table in WAREHOUSE_TABLES
    }
    assert not warehouse & {name.lower() for name in names}


def test_stages_that_quarantine_name_their_quarantine_table(specs) -> None:
    lake = Lake(settings.lake_dir())
    quarantining = set(stage_names(QUARANTINE_STAGES))
    assert quarantining
    for name, spec in specs.items():
        uri = spec.metadata.get(catalog.QUARANTINE_URI)
        if name in quarantining:
            assert uri is not None and uri.value == lake.table_uri(f"quarantine/{name}"), name
        else:
            assert uri is None, name


def test_checks_read_as_constraints(specs) -> None:
    def other(asset: str, column: str) -> list[str]:
        found = {c.name: c for c in _schema(specs[asset]).columns}[column]
        return list(found.constraints.other)

    assert other("raw_text", "doc_id") == ["matches ^[0-9a-f]{16}$"]
    assert other("cleaned_text", "lang_score") == ["in range 0..1"]
    assert other("features", "embedding") == ["unit-norm"]
    assert other("tokens", "n_tokens") == [">= 2"]
    assert other("reports", "bytes") == ["> 0"]
    assert other("predictions", "sentiment_label") == ["one of negative, positive"]
    assert _schema(specs["quality"]).constraints.other == ["unique (ingest_date, source)"]


def test_types_read_as_polars_types(specs) -> None:
    types = {c.name: c.type for c in _schema(specs["raw_text"]).columns}
    assert types["event_time"] == "Datetime(us, UTC)"
    assert types[PARTITION] == "Date"
    assert catalog.type_name(pl.List(pl.Struct({"a": pl.String, "n": pl.Int64}))) == (
        "List(Struct(a: String, n: Int64))"
    )
    assert catalog.type_name(pl.Array(pl.Float32, 384)) == "Array(Float32, 384)"


def test_model_tables_with_a_declared_schema_have_theirs(specs) -> None:
    head = {c.name: c for c in _schema(specs["sentiment_model"]).columns}
    assert set(head) == {"label", "intercept", "coef", "embedding_model", "embedding_model_version"}
    assert head["coef"].constraints.nullable and not head["label"].constraints.nullable
    # unpartitioned: no ingest_date, no part
    languages = {c.name for c in _schema(specs["sentiment_languages"]).columns}
    assert PARTITION not in languages and PART_COLUMN not in languages


def test_every_column_description_is_used() -> None:
    """COLUMN_DOCS stays the one place: no description of a column no table has."""
    used = {PARTITION, PART_COLUMN}
    for name in catalog.TABLES:
        schema = catalog.schema_of(name)
        assert schema is not None
        used |= set(schema.columns)
    assert set(catalog.COLUMN_DOCS) <= used, set(catalog.COLUMN_DOCS) - used
    for table, overrides in catalog.TABLE_COLUMN_DOCS.items():
        schema = catalog.schema_of(table)
        assert schema is not None and set(overrides) <= set(schema.columns), table


def test_descriptions_move_no_code_version() -> None:
    """No stage imports the catalog: rewording a description leaves every stage fresh."""
    for assets_def in asset_definitions:
        assert "nlp_assets.catalog" not in conventions.sources(
            conventions.defining_module(assets_def)
        ), assets_def.key


def test_an_undeclared_asset_gets_no_catalog_metadata() -> None:
    spec = dg.AssetSpec("elsewhere", group_name="downstream", metadata={"keep": 1})
    (applied,) = conventions.apply([spec], {})
    assert dict(applied.metadata) == {"keep": 1}


# --- column lineage -----------------------------------------------------------------------------


def _deps(asset: str, upstreams=None) -> dict[str, list[str]]:
    lineage = catalog.column_lineage(dg.AssetKey(asset), upstreams)
    if lineage is None:
        return {}
    return {
        column: [f"{dep.asset_key.to_user_string()}.{dep.column_name}" for dep in deps]
        for column, deps in lineage.deps_by_column.items()
    }


def test_document_columns_flow_from_cleaned_text_downstream() -> None:
    assert _deps("tokens") == {
        "doc_id": ["cleaned_text.doc_id"],
        "ingest_date": ["cleaned_text.ingest_date"],
    }
    assert _deps("features") == {
        "doc_id": ["cleaned_text.doc_id", "tokens.doc_id"],
        "ingest_date": ["cleaned_text.ingest_date", "tokens.ingest_date"],
    }
    predictions = _deps("predictions")
    for column in ("source", "lang", "is_duplicate"):
        assert predictions[column] == [f"cleaned_text.{column}"]
    assert "sentiment_label" not in predictions  # the model's, not upstream's
    assert _deps("aggregates")["sentiment_label"] == ["predictions.sentiment_label"]


def test_lineage_is_none_without_a_daily_upstream() -> None:
    assert catalog.column_lineage(dg.AssetKey("raw_text")) is None  # Kafka topics: no schema
    assert catalog.column_lineage(dg.AssetKey("sentiment_model")) is None  # not daily
    assert catalog.column_lineage(dg.AssetKey("ner_evaluation")) is None  # undeclared
    assert catalog.column_lineage(dg.AssetKey("warehouse_predictions")) is None


def test_model_tables_and_part_never_feed_lineage() -> None:
    """predictions reads sentiment_model and sentiment_languages (with a `lang` column) as
    weights; `part` is each table's own."""
    for deps in _deps("predictions").values():
        assert not any(dep.startswith(("sentiment_model.", "sentiment_languages.")) for dep in deps)
    for asset in catalog.TABLES:
        assert PART_COLUMN not in _deps(asset), asset


def test_lineage_needs_the_same_name_and_type() -> None:
    """Given upstreams explicitly: n_docs is Int64 in quality, UInt32 in sentiment_by_source."""
    deps = _deps("quality", ["sentiment_by_source"])
    assert deps["source"] == ["sentiment_by_source.source"]
    assert deps["positive_share"] == ["sentiment_by_source.positive_share"]
    assert "n_docs" not in deps and "n_scored" not in deps
    assert _deps("quality", [dg.AssetKey("sentiment_model")]) == {}


def test_check_text_of_every_check_kind() -> None:
    assert catalog.check_text(pa.Check.in_range(0, 1, include_max=False)) == "in range [0, 1)"
    assert catalog.check_text(pa.Check.le(5)) == "<= 5"
    assert catalog.check_text(pa.Check.lt(5)) == "< 5"
    assert catalog.check_text(pa.Check.notin(["x"])) == "none of x"
    assert catalog.check_text(pa.Check.eq(3)) == "= 3"
    assert catalog.check_text(pa.Check(lambda data: True, error="sorted")) == "sorted"


def test_a_materialisation_keeps_the_descriptions_with_the_frame_types() -> None:
    frame = pl.DataFrame(
        {"doc_id": ["0123456789abcdef"], "embedding": [[0.6, 0.8]], "extra": [1]},
        schema={"doc_id": pl.String, "embedding": pl.Array(pl.Float32, 2), "extra": pl.Int64},
    )
    schema = catalog.materialized_column_schema(dg.AssetKey("features"), frame)
    columns = {c.name: c for c in schema.columns}
    assert list(columns) == ["doc_id", PARTITION, "embedding", PART_COLUMN, "extra"]
    assert columns["embedding"].type == "Array(Float32, 2)"
    assert columns["embedding"].constraints.other == ["unit-norm"]
    assert columns["doc_id"].description == catalog.COLUMN_DOCS["doc_id"]
    assert columns["extra"].description is None
    plain = catalog.materialized_column_schema(dg.AssetKey("ner_evaluation"), frame)
    assert [(c.name, c.type) for c in plain.columns] == [
        ("doc_id", "String"),
        ("embedding", "Array(Float32, 2)"),
        ("extra", "Int64"),
    ]
