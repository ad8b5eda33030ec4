"""Models served by the shared model server (`resources.models.server`), with the in-process
registry as the fallback.

When `NLP_MODEL_SERVER_URL` is set, `ModelResource`'s registry loads each entry with
`RemoteLoader`: it asks the server for the entry (waiting up to `NLP_MODEL_SERVER_WAIT_SECONDS`
while it starts or restarts), checks that the server's entry has the caller's configuration,
and hands the step a proxy with the same interface as the in-process model (`RemoteEmbedder`,
`RemoteClassifier`, `RemoteEntities`). The proxy tokenises locally (the token ids are the cache
key and the tokens stage's output) and sends token ids or texts to the server.

The fallback: the server unreachable at load, or gone in the middle of a call for longer than
the wait, means the entry is loaded in-process (`load_model`) and the call is answered from it;
the proxy records why (`server_fallback_reason`, in the step's metadata), retries the server
after `RETRY_SERVER_SECONDS`, and never fails a step or drops a document for that reason alone.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from nlp_assets.resources.models.adapters import Entities, SentenceEmbedder
from nlp_assets.resources.models.specs import InferenceStats, ModelLoadError, ModelSpec

log = logging.getLogger(__name__)

#: Rows per request: big enough to batch well, small enough that callers interleave.
CHUNK_ROWS = 1_024
#: After a fallback, how long a proxy serves in-process before it tries the server again.
RETRY_SERVER_SECONDS = 30.0
#: Spec fields that change a result: the server's entry must match the caller's on these.
RESULT_FIELDS = (
    "task",
    "format",
    "source",
    "version",
    "dtype",
    "max_length",
    "max_windows",
    "window_overlap",
    "backend",
    "label_map",
    "expected_labels",
)


class ServerUnavailable(RuntimeError):
    """The model server did not answer within the wait (down, restarting, overloaded)."""


def result_settings(spec: ModelSpec) -> dict[str, Any]:
    """The part of an entry's configuration that changes its results (compared with the
    server's entry of the same name before the server serves it)."""
    values = spec.model_dump()
    return {name: values[name] for name in RESULT_FIELDS}


class ModelServerClient:
    """HTTP/JSON client of one model server: retries while it is unreachable or not ready, up
    to `wait_seconds`, then raises `ServerUnavailable`; any other error status is a
    `ModelLoadError` (the server refused the request: a bug or a configuration mismatch)."""

    def __init__(
        self,
        url: str,
        wait_seconds: float = 20.0,
        timeout_seconds: float = 300.0,
        token: str | None = None,
    ):
        self.url = url.rstrip("/")
        self.wait_seconds = wait_seconds
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds, connect=2.0),
            limits=httpx.Limits(max_keepalive_connections=8),
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, wait: float | None = None, **kwargs: Any) -> Any:
        deadline = time.monotonic() + (self.wait_seconds if wait is None else wait)
        delay = 0.1
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
                if response.status_code not in (502, 503, 504):
                    if response.is_error:
                        raise ModelLoadError(
                            f"model server {self.url}{path}: {response.status_code} "
                            f"{response.text[:300]}"
                        )
                    return response.json()
                problem = f"{response.status_code} {response.text[:200]}"
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
            if time.monotonic() + delay > deadline:
                raise ServerUnavailable(
                    f"model server {self.url} did not answer {path} within "
                    f"{self.wait_seconds if wait is None else wait:g} s ({problem})"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def describe(self, name: str, wait: float | None = None) -> dict[str, Any]:
        return self.request("GET", f"/v1/models/{name}", wait=wait)

    def embed(self, name: str, token_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, dict]:
        body = self.request(
            "POST", f"/v1/models/{name}/embed", json={"token_ids": [list(t) for t in token_ids]}
        )
        raw = base64.b64decode(body["vectors"])
        vectors = np.frombuffer(raw, dtype="<f4").reshape(len(token_ids), int(body["dim"]))
        return vectors.copy(), body

    def entities(self, name: str, texts: Sequence[str]) -> tuple[Entities, dict]:
        body = self.request("POST", f"/v1/models/{name}/entities", json={"texts": list(texts)})
        return body["entities"], body

    def proba(self, name: str, texts: Sequence[str]) -> tuple[np.ndarray, dict]:
        body = self.request("POST", f"/v1/models/{name}/proba", json={"texts": list(texts)})
        return np.asarray(body["probabilities"], dtype=np.float64), body


class FastTokenizer:
    """A checkpoint's `tokenizer.json` through HF `tokenizers`, the library transformers' fast
    tokenizers wrap, called the way the pipeline calls those: the same token ids (checked
    against `AutoTokenizer` in `test_model_server.py`) without importing torch or
    transformers, which is most of a micro-batch run's start when a server holds the model."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self._file = str(Path(path) / "tokenizer.json")
        self._full = self._load(None)
        config = json.loads((Path(path) / "tokenizer_config.json").read_text(encoding="utf-8"))
        self.sep_token_id = self._full.token_to_id(str(config.get("sep_token") or "[SEP]"))
        self.pad_token_id = self._full.token_to_id(str(config.get("pad_token") or "[PAD]"))
        self.vocab_size = self._full.get_vocab_size()
        self.is_fast = True
        self._cut: dict[int, Tokenizer] = {}
        self._lock = threading.Lock()

    def _load(self, max_length: int | None) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(self._file)
        tokenizer.no_padding()
        if max_length is None:
            tokenizer.no_truncation()
        else:
            tokenizer.enable_truncation(max_length=max_length)
        return tokenizer

    @staticmethod
    def usable(path: Path) -> bool:
        return (Path(path) / "tokenizer.json").is_file() and (
            Path(path) / "tokenizer_config.json"
        ).is_file()

    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        truncation: bool = False,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        **_options: Any,  # return_attention_mask, verbose ...: ids are all the pipeline reads
    ) -> dict[str, Any]:
        tokenizer = self._full
        if truncation and max_length:
            with self._lock:  # one truncating copy per length: encoding never mutates them
                if max_length not in self._cut:
                    self._cut[max_length] = self._load(max_length)
                tokenizer = self._cut[max_length]
        batch = [texts] if isinstance(texts, str) else list(texts)
        ids = [e.ids for e in tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens)]
        return {"input_ids": ids[0] if isinstance(texts, str) else ids}


class _Remote:
    """What the proxies share: the server's description, calls in chunks with stats, and the
    in-process fallback when the server stays away."""

    name: str
    version: str
    spec: ModelSpec
    client: ModelServerClient

    def _init_remote(
        self,
        spec: ModelSpec,
        client: ModelServerClient,
        described: dict[str, Any],
        load_local: Callable[[ModelSpec], Any],
    ) -> None:
        self.spec, self.client, self._load_local = spec, client, load_local
        self.name, self.version = spec.name, str(described["version"])
        self.device = f"server:{described.get('device', 'cpu')}"
        self.dtype = str(described.get("dtype", "float32"))
        self.backend = str(described.get("backend", "torch"))
        self.memory_bytes = 0  # held by the server, not this process
        self.served_from = client.url
        self.server_fallback_reason = ""
        self._local: Any = None
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def _local_model(self, reason: str) -> Any:
        with self._lock:
            if self._local is None:
                log.warning("%s: %s; loading it in this process", self.name, reason)
                self._local = self._load_local(self.spec)
            self.server_fallback_reason = self.server_fallback_reason or reason
            self.served_from = "in-process"
            self._retry_at = time.monotonic() + RETRY_SERVER_SECONDS
            return self._local

    def _serve(
        self,
        items: Sequence[Any],
        remote: Callable[[Sequence[Any]], tuple[Any, dict]],
        local: Callable[[Any, Sequence[Any]], Any],
        join: Callable[[list[Any]], Any],
        stats: InferenceStats | None,
    ) -> Any:
        """`remote(chunk)` per chunk of `items` while the server answers; from the first
        chunk it does not answer, `local(model, rest)` on the in-process model."""
        if self._local is not None and time.monotonic() < self._retry_at:
            return local(self._local, items)
        parts: list[Any] = []
        for start in range(0, len(items), CHUNK_ROWS):
            chunk = items[start : start + CHUNK_ROWS]
            try:
                out, body = remote(chunk)
            except ServerUnavailable as error:
                model = self._local_model(str(error))
                parts.append(local(model, items[start:]))
                return join(parts)
            if stats is not None:
                stats.add(int(body.get("tokens", 0)), float(body.get("seconds", 0.0)))
            parts.append(out)
        if self._local is not None:  # the server is back
            self.served_from = self.client.url
        return join(parts) if parts else join([])


def _runs_on_the_server(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    raise NotImplementedError("a remote embedder's backend runs on the server")


class RemoteEmbedder(_Remote, SentenceEmbedder):
    """A `SentenceEmbedder` whose forward passes run on the server: tokenisation and the
    window arithmetic (`read_length`, `n_windows`) are the in-process class's own, from the
    server's settings, so token ids and cache keys are the same either way."""

    def __init__(
        self,
        spec: ModelSpec,
        client: ModelServerClient,
        described: dict[str, Any],
        load_local: Callable[[ModelSpec], Any],
        path: Any,
    ):  # no super().__init__: nothing is loaded here but the tokenizer
        self._init_remote(spec, client, described, load_local)
        self.path = path
        if FastTokenizer.usable(path):
            self.tokenizer = FastTokenizer(path)  # type: ignore[assignment]
        else:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.dim = int(described["dim"])
        self.max_length = int(described["max_length"])
        self.max_windows = int(described["max_windows"])
        self.window_overlap = int(described["window_overlap"])
        self.special_tokens = tuple(described["special_tokens"])
        self.batch_tokens, self.batch_rows = spec.batch_tokens, spec.batch_rows
        # the server's backend: torch's cache keys carry none, the exported ones their name
        plain_torch = self.backend == f"torch-{self.dtype}"  # SentenceEmbedder.choose_backend
        self._runner = None if plain_torch else _runs_on_the_server
        self.backend_note = str(described.get("backend_note", ""))
        if self.cache_version != described["cache_version"]:
            raise ModelLoadError(
                f"{self.name}: the server's cache version {described['cache_version']} is not "
                f"the one its settings give here ({self.cache_version})"
            )

    @property
    def cache_version(self) -> str:
        if self._local is not None and self.served_from == "in-process":
            return str(self._local.cache_version)
        return SentenceEmbedder.cache_version.fget(self)  # type: ignore[attr-defined]

    def embed_token_ids(
        self, token_ids: Sequence[Sequence[int]], stats: InferenceStats | None = None
    ) -> np.ndarray:
        return self._serve(
            token_ids,
            lambda chunk: self.client.embed(self.name, chunk),
            lambda model, rest: model.embed_token_ids(rest, stats),
            lambda parts: np.vstack(parts) if parts else np.zeros((0, self.dim), np.float32),
            stats,
        )

    def embed_windows(self, windows: Any, stats: InferenceStats | None = None) -> np.ndarray:
        raise NotImplementedError("a remote embedder embeds documents (embed_token_ids)")


class RemoteClassifier(_Remote):
    """A sequence classifier on the server: `predict_proba_texts` like `SequenceClassifier`."""

    task = "classifier"

    def __init__(self, spec, client, described, load_local):
        self._init_remote(spec, client, described, load_local)
        self.labels = tuple(described["labels"])
        self._cache_version = str(described["cache_version"])

    @property
    def cache_version(self) -> str:
        if self._local is not None and self.served_from == "in-process":
            return str(self._local.cache_version)
        return self._cache_version

    def predict_proba_texts(
        self, texts: Sequence[str], stats: InferenceStats | None = None
    ) -> np.ndarray:
        return self._serve(
            texts,
            lambda chunk: self.client.proba(self.name, chunk),
            lambda model, rest: model.predict_proba_texts(rest, stats),
            lambda parts: (
                np.vstack(parts) if parts else np.zeros((0, len(self.labels)), np.float64)
            ),
            stats,
        )


class RemoteEntities(_Remote):
    """An entity model on the server (spaCy or token classification): `entities(texts)`."""

    task = "entities"

    def __init__(self, spec, client, described, load_local):
        self._init_remote(spec, client, described, load_local)
        self._cache_version = str(described["cache_version"])
        self.name = str(described.get("model_name", spec.name))

    @property
    def cache_version(self) -> str:
        if self._local is not None and self.served_from == "in-process":
            return str(self._local.cache_version)
        return self._cache_version

    def entities(self, texts: Sequence[str], stats: InferenceStats | None = None) -> Entities:
        return self._serve(
            texts,
            lambda chunk: self.client.entities(self.spec.name, chunk),
            lambda model, rest: model.entities(rest, stats),
            lambda parts: [row for part in parts for row in part],
            stats,
        )


class RemoteLoader:
    """The registry's loader when a model server is configured: a proxy for each entry the
    server serves with the caller's settings, the in-process model otherwise (and why)."""

    def __init__(self, client: ModelServerClient, load_local: Callable[[ModelSpec], Any]):
        self.client, self.load_local = client, load_local

    def __call__(self, spec: ModelSpec) -> Any:
        try:
            described = self.client.describe(spec.name)
            if described.get("settings") != result_settings(spec):
                raise ModelLoadError(
                    f"the server's {spec.name} has other settings ({described.get('settings')})"
                )
            return self._proxy(spec, described)
        except (ServerUnavailable, ModelLoadError) as error:
            log.warning(
                "%s: not served by the model server (%s); loading it here", spec.name, error
            )
            model = self.load_local(spec)
            model.served_from = "in-process"
            model.server_fallback_reason = str(error)
            return model

    def _proxy(self, spec: ModelSpec, described: dict[str, Any]) -> Any:
        if spec.format == "sentence-encoder":
            from nlp_assets.resources.models.registry import model_path

            path, _ = model_path(spec)
            return RemoteEmbedder(spec, self.client, described, self.load_local, path)
        if spec.format == "hf-sequence-classification":
            return RemoteClassifier(spec, self.client, described, self.load_local)
        if spec.format in ("spacy", "hf-token-classification"):
            return RemoteEntities(spec, self.client, described, self.load_local)
        raise ModelLoadError(f"{spec.name}: format {spec.format!r} is not served remotely")
