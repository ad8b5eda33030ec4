"""Models inside a Spark Python worker: built from plain config values, once per worker.

Spark reuses its Python workers across tasks (`spark.python.worker.reuse`, on by default), so a
module-level cache keyed by the model config loads each model once per worker and serves every
batch after that. The config is the model resource's field values (plain, picklable), never a
loaded model.

Each batch a stage runs on Spark reports what it did (`batch_report`): the worker (host, pid),
the models it loaded for that batch (0 once the worker has them), the model-result cache's
hits and misses and the model's tokens and seconds. The driver sums the reports into the
stage's metadata (`spark_step_metadata`), so "each executor loads each model once" is a figure
of every run, not a belief.

`prediction_models` builds the predictions stage's models (NER, text sentiment, A/B
candidates, each wrapped in the result cache) the same way on both engines.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import polars as pl

_models: dict[tuple[str, str], Any] = {}
_resources: dict[str, Any] = {}
_lock = threading.RLock()
#: How many times this worker loaded each model (the tests read it to prove "once").
loads: dict[tuple[str, str], int] = {}


def model_config(models: Any) -> dict[str, Any]:
    """The field values of a model resource: what a worker needs to build the same models."""
    return {name: getattr(models, name) for name in type(models).model_fields}


def _key(kind: str, config: dict[str, Any]) -> tuple[str, str]:
    return kind, repr(sorted(config.items()))


def resource(config: dict[str, Any]) -> Any:
    """The model resource of `config` in this worker (one per config: its registry too)."""
    from nlp_assets.resources.models import ModelResource

    key = _key("resource", config)[1]
    with _lock:
        if key not in _resources:
            # Spark already runs a task per core: spaCy NER stays in this worker's process
            os.environ["NLP_NER_PROCESSES"] = "1"
            _resources[key] = ModelResource(**config)
        return _resources[key]


def _load(kind: str, config: dict[str, Any], build: Callable[[Any], Any]) -> Any:
    key = _key(kind, config)
    with _lock:
        if key not in _models:
            _models[key] = build(resource(config))
            loads[key] = loads.get(key, 0) + 1
        return _models[key]


def served(config: dict[str, Any], task: str) -> Any:
    """The registry entry serving `task` (a `resources.models.Served`), loaded once."""
    return _load(f"serve:{task}", config, lambda r: r.serve(task))


def registry_model(config: dict[str, Any], name: str) -> Any:
    """A registry entry by name (an A/B candidate), loaded once."""
    return _load(f"model:{name}", config, lambda r: r.model_registry().get(name))


def embedder(config: dict[str, Any]) -> Any:
    return served(config, "embedding").model


def entity_recognizer(config: dict[str, Any]) -> Any:
    return served(config, "entities").model


def load_count() -> int:
    """Models this worker process has loaded so far."""
    return sum(loads.values())


# -- the predictions stage's models, on either engine ------------------------------------------
@dataclass
class PredictionModels:
    """NER, the optional text sentiment model and A/B candidates, cache-wrapped."""

    served: list[Any]
    ner: Any
    text_model: Any | None = None
    candidates: dict[str, Any] = field(default_factory=dict)


def prediction_models(
    models: Any,
    serve: Callable[[str], Any],
    get: Callable[[str], Any],
    **cached: Any,
) -> PredictionModels:
    """What `predict_documents` needs besides the head: `serve(task)` and `get(name)` give
    `Served` entries (the driver's registry or a worker's), `cached` is the cache wrappers'
    arguments (cache, namespace, stats, inference, warn)."""
    from nlp_assets.kernels.predict import Candidate
    from nlp_assets.resources.models import CachedEntities, TextSentiment

    used = [serve("entities")]
    chosen = PredictionModels(used, CachedEntities(used[0].model, **cached))
    if models.sentiment:
        used.append(serve("sentiment"))
        chosen.text_model = TextSentiment(used[-1].model, **cached)
    for task in ("sentiment", "entities"):
        test = models.ab_test(task)
        if test is None:
            continue
        used.append(get(test.candidate))
        model = used[-1].model
        wrapped = (
            TextSentiment(model, **cached)
            if task == "sentiment"
            else CachedEntities(model, **cached)
        )
        chosen.candidates[task] = Candidate(wrapped, test.share, test.salt)
    return chosen


# -- per-batch reports ----------------------------------------------------------------------------
REPORT_SCHEMA: dict[str, pl.DataType] = {
    "host": pl.String(),
    "pid": pl.Int64(),
    "rows": pl.Int64(),
    "model_loads": pl.Int64(),
    "cache_hits": pl.Int64(),
    "cache_hits_l1": pl.Int64(),
    "cache_hits_l2": pl.Int64(),
    "cache_hits_l3": pl.Int64(),
    "cache_misses": pl.Int64(),
    "cache_errors": pl.Int64(),
    "cache_invalid": pl.Int64(),
    "model_seconds": pl.Float64(),
    "tokens": pl.Int64(),
    "inference_seconds": pl.Float64(),
    "cache_warning": pl.String(),
    "fallback_reason": pl.String(),
    # `served_metadata`'s strings (resources/models/cached.py): what the step's metadata says
    "backend": pl.String(),
    "model_server": pl.String(),
    "model_server_fallback_reason": pl.String(),
}


def batch_report(
    rows: int,
    loads_before: int,
    stats: Any = None,
    inference: Any = None,
    served_models: Iterable[Any] = (),
) -> pl.DataFrame:
    """One row: what this worker did for one batch (see REPORT_SCHEMA)."""
    from nlp_assets.resources.models.cached import served_metadata

    served = served_metadata(list(served_models))
    row = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "rows": rows,
        "model_loads": load_count() - loads_before,
        "cache_hits": stats.hits if stats else 0,
        **{f"cache_hits_l{n}": stats.level_hits.get(n, 0) if stats else 0 for n in (1, 2, 3)},
        "cache_misses": stats.misses if stats else 0,
        "cache_errors": stats.errors if stats else 0,
        "cache_invalid": stats.invalid if stats else 0,
        "model_seconds": stats.model_seconds if stats else 0.0,
        "tokens": inference.tokens if inference else 0,
        "inference_seconds": inference.seconds if inference else 0.0,
        "cache_warning": (stats.warnings[0] if stats and stats.warnings else None),
        "fallback_reason": served.get("model_fallback_reason"),
        **{key: served.get(key) for key in ("backend", "model_server")},
        "model_server_fallback_reason": served.get("model_server_fallback_reason"),
    }
    return pl.DataFrame([row], schema=REPORT_SCHEMA)


def spark_step_metadata(reports: pl.DataFrame) -> dict[str, Any]:
    """A Spark step's metadata from its batches' reports: model loads per Python worker
    (`host:pid` -> loads), cache figures and model time, summed over the batches."""
    by_worker = (
        reports.group_by("host", "pid")
        .agg(pl.col("model_loads").sum(), pl.len().alias("batches"))
        .sort("host", "pid")
    )
    out: dict[str, Any] = {
        "spark_batches": reports.height,
        "python_workers": by_worker.height,
        "model_loads": int(reports["model_loads"].sum()),
        "model_loads_by_worker": {
            f"{host}:{pid}": int(n) for host, pid, n, _ in by_worker.iter_rows()
        },
    }
    if reports.height and reports["tokens"].sum():
        seconds = float(reports["inference_seconds"].sum())
        out["tokens_per_second"] = (
            round(int(reports["tokens"].sum()) / seconds, 1) if seconds else 0
        )
    # polars types `sum()` as int | float | Decimal; these columns are Int64
    if cast(int, reports["cache_hits"].sum()) + cast(int, reports["cache_misses"].sum()):
        out |= {
            "cache_hits": int(reports["cache_hits"].sum()),
            **{f"cache_hits_l{n}": int(reports[f"cache_hits_l{n}"].sum()) for n in (1, 2, 3)},
            "cache_misses": int(reports["cache_misses"].sum()),
            "cache_errors": int(reports["cache_errors"].sum()),
            "cache_invalid": int(reports["cache_invalid"].sum()),
            "model_seconds": round(float(reports["model_seconds"].sum()), 3),
        }
    for column in ("cache_warning", "fallback_reason"):
        found = reports[column].drop_nulls()
        if found.len():
            out[column if column == "cache_warning" else "model_fallback_reason"] = found[0]
    out["model_fallback"] = int("model_fallback_reason" in out)
    for column in ("backend", "model_server"):  # the same in every batch, unless a worker fell back
        values = sorted(set(reports[column].drop_nulls().to_list()))
        if values:
            out[column] = "; ".join(values)
    if "model_server" in out:
        reasons = reports["model_server_fallback_reason"].drop_nulls()
        out["model_server_fallback"] = int(bool(reasons.len()))
        if reasons.len():
            out["model_server_fallback_reason"] = reasons[0]
    return out
