"""Owners, tags and code versions (nlp_assets/conventions.py): every asset is owned, and a
stage's code version moves when its kernel or its model changes, and only then."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from nlp_assets import conventions
from nlp_assets.definitions import defs, model_identities
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


def test_every_stage_carries_the_code_version_of_its_sources_and_models(specs) -> None:
    expected = conventions.code_versions(model_identities())
    for stage in stage_names(PIPELINE):
        assert specs[stage].code_version == expected[stage], stage


def test_an_asset_in_a_group_without_an_owner_is_refused() -> None:
    orphan = dg.AssetSpec("orphan", group_name="nobody_owns_this")
    with pytest.raises(ValueError, match="OWNERS_BY_GROUP"):
        conventions.apply([orphan], {})


def test_a_kernel_edit_moves_its_stage_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = conventions.code_versions(model_identities())
    package = tmp_path / "nlp_assets"
    shutil.copytree(conventions.PACKAGE, package, symlinks=True)
    kernel = package / "kernels" / "features.py"
    kernel.write_text(kernel.read_text() + "\n# a changed kernel\n")
    monkeypatch.setattr(conventions, "PACKAGE", package)

    after = conventions.code_versions(model_identities())

    assert after["features"] != before["features"]
    assert {name for name in before if before[name] != after[name]} == {"features"}


def test_another_embedding_checkpoint_moves_tokens_and_features_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NLP_EMBEDDING_MODEL_PATH", raising=False)
    before = conventions.code_versions(model_identities())
    monkeypatch.setenv("NLP_EMBEDDING_MODEL_PATH", str(tmp_path / "other-encoder"))

    after = conventions.code_versions(model_identities())

    assert {name for name in before if before[name] != after[name]} == {"tokens", "features"}


def test_another_ner_pipeline_moves_predictions_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NLP_NER_MODEL", raising=False)
    before = conventions.code_versions(model_identities())
    monkeypatch.setenv("NLP_NER_MODEL", "xx_ent_wiki_sm")

    after = conventions.code_versions(model_identities())

    assert {name for name in before if before[name] != after[name]} == {"predictions"}
