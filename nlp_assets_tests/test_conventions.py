"""Owners, tags and code versions (nlp_assets/conventions.py): every asset is owned, and a
stage's code version moves when a module it imports (directly or not) or its model changes,
and only then."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from nlp_assets import conventions
from nlp_assets.definitions import asset_definitions, defs, model_identities
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import PIPELINE


@pytest.fixture(scope="module")
def specs() -> dict[str, dg.AssetSpec]:
    graph = defs.resolve_asset_graph()
    return {
        spec.key.to_user_string(): spec
        for assets_def in graph.assets_defs
        for spec in assets_def.specs
    }


def test_every_asset_has_an_owning_team_and_a_domain_tag(specs) -> None:
    for name, spec in specs.items():
        assert [o for o in spec.owners if o.startswith("team:")], f"{name} has no team owner"
        assert spec.tags.get("domain") == spec.group_name, name


def _versions(read=Path.read_bytes) -> dict[str, str]:
    return conventions.code_versions(asset_definitions, model_identities(), read)


def test_every_stage_carries_the_code_version_of_its_sources_and_models(specs) -> None:
    expected = _versions()
    for stage in stage_names(PIPELINE):
        assert specs[stage].code_version == expected[stage], stage


def test_an_asset_in_a_group_without_an_owner_is_refused() -> None:
    orphan = dg.AssetSpec("orphan", group_name="nobody_owns_this")
    with pytest.raises(ValueError, match="OWNERS_BY_GROUP"):
        conventions.apply([orphan], {})


def test_predictions_sources_hold_the_modules_that_decide_its_rows_through_others() -> None:
    """Entity spans and window pooling live in the model adapters, which predictions reaches
    only through the engines and the model resource."""
    sources = conventions.sources("nlp_assets.stages.predictions")
    for module in (
        "nlp_assets.stages.predictions",
        "nlp_assets.kernels.predict",
        "nlp_assets.kernels.sentiment_languages",
        "nlp_assets.resources.models.adapters",  # spans(), pool_windows()
    ):
        assert module in sources, module


def test_code_versions_are_the_same_on_every_load() -> None:
    first = _versions()
    conventions.sources.cache_clear()
    conventions._imports.cache_clear()
    assert _versions() == first


def test_a_kernel_edit_moves_the_stages_that_import_it_and_no_other() -> None:
    kernel = conventions._module_file("nlp_assets.kernels.report")
    assert kernel is not None
    before = _versions()

    def edited(path: Path) -> bytes:
        return path.read_bytes() + (b"\n# a changed kernel\n" if path == kernel else b"")

    after = _versions(edited)

    assert {name for name in before if before[name] != after[name]} == {"reports"}


def test_an_adapter_edit_moves_predictions_though_it_never_imports_it_directly() -> None:
    adapters = conventions._module_file("nlp_assets.resources.models.adapters")
    before = _versions()

    after = _versions(lambda path: path.read_bytes() + (b"#" if path == adapters else b""))

    assert before["predictions"] != after["predictions"]
    assert before["aggregates"] == after["aggregates"]  # it runs no model


def test_another_embedding_checkpoint_moves_tokens_and_features_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NLP_EMBEDDING_MODEL_PATH", raising=False)
    before = _versions()
    monkeypatch.setenv("NLP_EMBEDDING_MODEL_PATH", str(tmp_path / "other-encoder"))

    after = _versions()

    assert {name for name in before if before[name] != after[name]} == {"tokens", "features"}


def test_another_ner_pipeline_moves_predictions_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NLP_NER_MODEL", raising=False)
    before = _versions()
    monkeypatch.setenv("NLP_NER_MODEL", "xx_ent_wiki_sm")

    after = _versions()

    assert {name for name in before if before[name] != after[name]} == {"predictions"}


class _ParsesWhenCollected:
    """Cyclic garbage whose finalizer parses source, as logging a traceback does on 3.11 (a
    leaked SQLite connection finalized mid-parse did this in CI)."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        conventions.ast.parse("x = (1 + 2) * 3")


def _parse_while_garbage_is_collected(parse) -> int:
    import ast
    import gc

    source = Path(ast.__file__).read_text(encoding="utf-8")
    threshold = gc.get_threshold()
    gc.set_threshold(1)  # a collection at nearly every allocation of the parse
    try:
        nodes = 0
        for _ in range(10):
            for _ in range(50):
                _ParsesWhenCollected()
            nodes += sum(1 for _ in ast.walk(parse(source)))
        return nodes
    finally:
        gc.set_threshold(*threshold)
        gc.collect()


def test_source_parses_though_a_finalizer_parses_in_the_middle_of_it() -> None:
    """The code versions read imports with `parse_python`; a collection in the middle of a
    plain `ast.parse` can fail it on CPython 3.11 (gh-106905). The attack is shown to work on
    plain `ast.parse` first."""
    import ast
    import sys

    if sys.version_info[:3] == (3, 11, 7):  # this machine kind's interpreter, which has the bug
        with pytest.raises(SystemError, match="recursion depth mismatch"):
            _parse_while_garbage_is_collected(ast.parse)
    whole = sum(1 for _ in ast.walk(ast.parse(Path(ast.__file__).read_text(encoding="utf-8"))))
    assert _parse_while_garbage_is_collected(conventions.parse_python) == 10 * whole
