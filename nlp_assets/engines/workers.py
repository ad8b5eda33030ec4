"""Models inside a Spark Python worker: built from plain config values, once per worker.

Spark reuses its Python workers across tasks (`spark.python.worker.reuse`, on by default), so a
module-level cache keyed by the model config loads each model once per worker and serves every
batch after that. The config is the model resource's field values (plain, picklable), never a
loaded model.
"""

from __future__ import annotations

import threading
from typing import Any

_models: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()
#: How many times this worker loaded each model (the tests read it to prove "once").
loads: dict[tuple[str, str], int] = {}


def model_config(models: Any) -> dict[str, Any]:
    """The field values of a model resource: what a worker needs to build the same models."""
    return {name: getattr(models, name) for name in type(models).model_fields}


def _key(kind: str, config: dict[str, Any]) -> tuple[str, str]:
    return kind, repr(sorted(config.items()))


def _load(kind: str, config: dict[str, Any]) -> Any:
    from resources.models import ModelResource

    key = _key(kind, config)
    with _lock:
        if key not in _models:
            resource = ModelResource(**config)
            _models[key] = resource.embedder if kind == "embedder" else resource.entity_recognizer
            loads[key] = loads.get(key, 0) + 1
        return _models[key]


def embedder(config: dict[str, Any]) -> Any:
    return _load("embedder", config)


def entity_recognizer(config: dict[str, Any]) -> Any:
    return _load("ner", config)
