"""The model layer: a registry of named models a data team configures, not edits.

Each registry entry (`ModelSpec`) names a task, a format (how to load it), a source (a local
folder, an installed package, or a Hugging Face id read from the local cache when
`HF_HUB_OFFLINE=1`), a version, device, dtype, max length and batch token budget. A
`ModelRegistry` loads entries lazily, checks each on load (a warm-up on known input: finite
outputs of the right shape; a reduced dtype must stay within tolerance of float32 or float32
serves), falls back to the configured fallback entry when one fails, and evicts the least
recently used under a memory budget. It is thread-safe and one per process per configuration.

Everything here but `ModelResource` is plain Python: a Spark Python worker builds the same
models from `ModelResource(...).specs()` (plain, picklable pydantic values) with `load_model`.
Importing the package has no side effects (no environment variable is set; torch,
transformers and spaCy load with the first model).

Which file holds what:

- `specs.py`: `ModelSpec`, `ABTest`, `Served`, `InferenceStats`, `ModelLoadError`, the
  defaults (`DEFAULT_NER_MODEL`, ...), tolerances (`MIN_COSINE`, ...) and warm-up texts.
- `device.py`: device and dtype choice (`pick_device`, `candidate_dtype`, `cpu_has_bf16`),
  the Kubernetes GPU request (`gpu_op_tags`).
- `sources.py`: where weights come from (`resolve_source`, `default_embedding_model_path`),
  their version (`fingerprint`), and the offline default (`hub_offline`).
- `adapters.py`: the model kinds: torch (`SentenceEmbedder` with `pool_windows`,
  `SequenceClassifier`, `TokenClassifier` with `spans`), spaCy (`EntityRecognizer`), language
  id (`LanguageIdentifier`); `length_batches`.
- `registry.py`: `load_model` and `ModelRegistry` (memory budget, fallback, eviction).
- `cached.py`: cached use next to `resources.model_cache` (`CachedEmbedder`,
  `CachedEntities`, `TextSentiment`, `cache_version`, `embedding_input_key`) and
  `step_metadata`.
- `batching.py`: `Batcher`, dynamic batching of concurrent requests (the model server's and
  `POST /v1/predict`'s).
- `resource.py`: the Dagster resource `ModelResource` and `load_embedder`.
"""

from nlp_assets.resources.models.adapters import (
    EntityRecognizer,
    LanguageIdentifier,
    SentenceEmbedder,
    SequenceClassifier,
    TokenClassifier,
    length_batches,
    pool_windows,
    spans,
)
from nlp_assets.resources.models.cached import (
    CachedEmbedder,
    CachedEntities,
    TextSentiment,
    cache_version,
    embedding_input_key,
    step_metadata,
)
from nlp_assets.resources.models.device import (
    candidate_dtype,
    cpu_has_bf16,
    gpu_op_tags,
    model_pool,
    pick_device,
)
from nlp_assets.resources.models.registry import ModelRegistry, load_model
from nlp_assets.resources.models.resource import (
    FINETUNED_MAX_LENGTH,
    FINETUNED_MODEL_NAME,
    SENTIMENT_LABELS,
    ModelResource,
    finetuned_ab_test,
    finetuned_sentiment_spec,
    load_embedder,
    models_from_env,
)
from nlp_assets.resources.models.sources import (
    default_embedding_model_path,
    fingerprint,
    hub_offline,
    resolve_source,
)
from nlp_assets.resources.models.specs import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_NER_ENTRY,
    DEFAULT_NER_MODEL,
    EMBEDDING_PACKAGE,
    FRENCH_NER_ENTRY,
    FRENCH_NER_MODEL,
    MAX_PROBA_DIFF,
    MIN_COSINE,
    WARMUP_TEXTS,
    WINDOW_OVERLAP,
    WINDOW_POOLING,
    ABTest,
    Format,
    InferenceStats,
    ModelLoadError,
    ModelSpec,
    Served,
    Task,
)

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_NER_ENTRY",
    "DEFAULT_NER_MODEL",
    "EMBEDDING_PACKAGE",
    "FINETUNED_MAX_LENGTH",
    "FINETUNED_MODEL_NAME",
    "FRENCH_NER_ENTRY",
    "FRENCH_NER_MODEL",
    "MAX_PROBA_DIFF",
    "MIN_COSINE",
    "SENTIMENT_LABELS",
    "WARMUP_TEXTS",
    "WINDOW_OVERLAP",
    "WINDOW_POOLING",
    "ABTest",
    "CachedEmbedder",
    "CachedEntities",
    "EntityRecognizer",
    "Format",
    "InferenceStats",
    "LanguageIdentifier",
    "ModelLoadError",
    "ModelRegistry",
    "ModelResource",
    "ModelSpec",
    "SentenceEmbedder",
    "SequenceClassifier",
    "Served",
    "Task",
    "TextSentiment",
    "TokenClassifier",
    "cache_version",
    "candidate_dtype",
    "cpu_has_bf16",
    "default_embedding_model_path",
    "embedding_input_key",
    "finetuned_ab_test",
    "finetuned_sentiment_spec",
    "fingerprint",
    "gpu_op_tags",
    "hub_offline",
    "length_batches",
    "load_embedder",
    "load_model",
    "model_pool",
    "models_from_env",
    "pick_device",
    "pool_windows",
    "resolve_source",
    "spans",
    "step_metadata",
]
