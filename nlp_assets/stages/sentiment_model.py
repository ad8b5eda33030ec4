import time

import dagster as dg
import polars as pl
from pydantic import Field

from nlp_assets.kernels.sentiment import train_sentiment_head
from nlp_assets.resources.lake import markdown_preview
from nlp_assets.resources.models import ModelResource
from nlp_assets.settings import labelled_sentiment_path
from nlp_assets.stages.common import RETRY_POLICY

ACCURACY_CHECK = "held_out_accuracy"
#: Measured on the held-out split (n=909): accuracy 0.756, macro-F1 0.755 (5-fold on the Pang &
#: Lee sentences alone: 0.757). With n=909 the standard error is ~0.014, so floors of 0.72 sit
#: about 2.5 standard errors below the measured figures: they trip on a worse head (another
#: embedding model, broken labels), not on a different split. Chance is ~0.5.
ACCURACY_FLOOR = 0.72
MACRO_F1_FLOOR = 0.72


class SentimentTrainingConfig(dg.Config):
    labelled_path: str = Field(
        default_factory=labelled_sentiment_path,
        description="Parquet with text, label (positive|negative) and domain columns.",
    )
    test_size: float = Field(default=0.2, description="Share held out for evaluation.")
    seed: int = 0


@dg.asset(
    group_name="models",
    kinds={"scikitlearn", "parquet"},
    io_manager_key="lake_io_manager",
    retry_policy=RETRY_POLICY,
    description="Logistic-regression sentiment head over the embedding model's sentence "
    "vectors, trained on labelled movie-review sentences and drug reviews; stored as a weight "
    "table (no pickle). Held-out accuracy and macro-F1 are in the metadata.",
    check_specs=[
        dg.AssetCheckSpec(
            ACCURACY_CHECK,
            asset="sentiment_model",
            blocking=True,
            description=f"Held-out accuracy >= {ACCURACY_FLOOR} and macro-F1 >= "
            f"{MACRO_F1_FLOOR} (measured 0.756 / 0.755 on n=909; floors ~2.5 SE below).",
        )
    ],
)
def sentiment_model(
    context: dg.AssetExecutionContext, config: SentimentTrainingConfig, models: ModelResource
):
    started = time.perf_counter()
    labelled = pl.read_parquet(config.labelled_path)
    embedder = models.embedder
    embeddings = embedder.embed_texts(labelled["text"].to_list())
    result = train_sentiment_head(
        embeddings,
        labelled["label"].to_list(),
        labelled["domain"].to_list(),
        embedding_model=embedder.name,
        embedding_model_version=embedder.version,
        test_size=config.test_size,
        seed=config.seed,
    )
    accuracy = result.metrics["accuracy"]
    context.log.info(f"sentiment head {result.head.version}: held-out accuracy {accuracy:.3f}")
    return dg.MaterializeResult(
        value=result.head.to_frame(),
        metadata={
            **result.metrics,
            "model_version": result.head.version,
            "embedding_model": embedder.name,
            "per_domain": dg.MetadataValue.md(markdown_preview(result.per_domain)),
            "training_rows": dg.MetadataValue.json(
                dict(
                    labelled.group_by("domain", "label")
                    .len()
                    .select(pl.format("{}/{}", "domain", "label"), "len")
                    .iter_rows()
                )
            ),
            "seconds": round(time.perf_counter() - started, 3),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=ACCURACY_CHECK,
                passed=accuracy >= ACCURACY_FLOOR and result.metrics["macro_f1"] >= MACRO_F1_FLOOR,
                metadata={
                    "accuracy": accuracy,
                    "floor": ACCURACY_FLOOR,
                    "macro_f1": result.metrics["macro_f1"],
                    "macro_f1_floor": MACRO_F1_FLOOR,
                },
            )
        ],
    )
