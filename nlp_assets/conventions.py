"""Owners, tags and code versions, applied to every asset spec in one pass (`apply`).

- Owners and a `domain` tag come from the asset's group, so a new asset in a group is owned
  the day it is added.
- A stage's `code_version` is a hash of the source files that decide its rows (its wiring and
  kernels) and of the models it runs. Change a kernel or point `NLP_EMBEDDING_MODEL_PATH` at
  another checkpoint and the UI shows the stage, and everything downstream of it, as stale
  ("code version changed") instead of silently mixing old and new partitions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

PACKAGE = Path(__file__).resolve().parent

#: Group -> the team that answers for it (Dagster owners: `team:<name>` or an e-mail).
OWNERS_BY_GROUP: Mapping[str, str] = {
    "sources": "team:data-platform",
    "ingest": "team:data-platform",
    "preprocess": "team:data-platform",
    "features": "team:ml",
    "inference": "team:ml",
    "models": "team:ml",
    "analytics": "team:analytics",
    "warehouse": "team:analytics",
    "downstream": "team:analytics",
}

#: Asset -> the package files (relative to nlp_assets/) whose code decides its output.
ASSET_SOURCES: Mapping[str, Sequence[str]] = {
    "raw_text": [
        "stages/raw_text.py",
        "kernels/ingest.py",
        "kafka/raw.py",
        "kafka/messages.py",
        "schemas.py",
    ],
    "cleaned_text": ["stages/cleaned_text.py", "kernels/clean.py", "kernels/quarantine.py"],
    "tokens": ["stages/tokens.py", "kernels/tokenize.py"],
    "features": ["stages/features.py", "kernels/features.py"],
    "predictions": ["stages/predictions.py", "kernels/predict.py", "kernels/sentiment.py"],
    "aggregates": ["stages/aggregates.py", "kernels/aggregate.py"],
    "quality": ["stages/quality.py", "kernels/quality.py"],
    "reports": ["stages/reports.py", "kernels/report.py"],
    # models trained beside the pipeline, the warehouse tables, the example downstream asset
    "sentiment_model": ["stages/sentiment_model.py", "kernels/sentiment.py"],
    "sentiment_finetuned": ["stages/sentiment_finetuned.py", "kernels/finetune.py"],
    "sentiment_languages": ["stages/sentiment_languages.py", "kernels/sentiment_languages.py"],
    "ner_evaluation": ["stages/ner_evaluation.py", "kernels/ner_eval.py"],
    **{
        f"warehouse_{table}": ["warehouse/assets.py", "warehouse/load.py"]
        for table in ("documents", "predictions", "aggregates")
    },
    "sentiment_by_source": ["downstream/sentiment_by_source.py"],
}


def source_version(files: Sequence[str], models: Sequence[str] = ()) -> str:
    """First 12 hex digits of sha256 over the files' bytes and the model identities."""
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode())
        digest.update((PACKAGE / name).read_bytes())
    for model in models:
        digest.update(b"\0model:" + model.encode())
    return digest.hexdigest()[:12]


def code_versions(model_identities: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """`code_version` of each asset: its sources plus the models it runs
    (`model_identities`: stage -> strings naming each model and its settings)."""
    return {
        stage: source_version(files, model_identities.get(stage, ()))
        for stage, files in ASSET_SOURCES.items()
    }


def apply(assets: Iterable[Any], code_versions: Mapping[str, str]) -> list[Any]:
    """Every spec (of AssetsDefinitions and AssetSpecs) gets its group's owner and `domain`
    tag; the assets of `code_versions` get theirs."""

    def conventions(spec: dg.AssetSpec) -> dg.AssetSpec:
        group = spec.group_name or "default"
        if group not in OWNERS_BY_GROUP:
            raise ValueError(
                f"asset {spec.key.to_user_string()} is in group {group!r}, which has no owner "
                "in nlp_assets/conventions.py OWNERS_BY_GROUP"
            )
        changes: dict[str, Any] = {
            "owners": sorted({*spec.owners, OWNERS_BY_GROUP[group]}),
            "tags": {**spec.tags, "domain": group},
        }
        name = spec.key.to_user_string()
        if name in code_versions:
            changes["code_version"] = code_versions[name]
        return spec.replace_attributes(**changes)

    return list(dg.map_asset_specs(conventions, assets))
