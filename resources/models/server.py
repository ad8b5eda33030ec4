"""The model server (`nlp serve-models`): one long-lived process per machine that holds the
registry's models once and batches requests across callers (runs, the API, Spark executors).

It serves the registry of the pipeline's own `ModelResource` (the same environment builds the
same entries), so a result is the one the in-process path gives. The models live in one model
worker process (spawned; replaced if it dies), the HTTP side in this one. Each entry gets a
`Batcher` (batching.py): one thread that takes every request queued while the previous batch
ran (and waits `max_wait_ms` for more when the queue holds little) and sends them to the worker
as one call.
FastAPI + uvicorn, like the API; docs/architecture.md says why not LitServe, Ray Serve or
BentoML.

Endpoints: `/healthz` (the process answers), `/readyz` (the default entries are loaded and warm),
`/metrics` (Prometheus), `GET /v1/models[/{name}]` (what it serves, with the settings that
change a result), `POST /v1/models/{name}/embed|entities|proba`. With `NLP_MODEL_SERVER_TOKEN`
set, the `/v1` endpoints need it as a bearer token.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from pydantic import BaseModel, Field

from nlp_assets.resources.models.batching import Batcher, BatchMetrics
from nlp_assets.resources.models.remote import result_settings
from nlp_assets.resources.models.resource import ModelResource
from nlp_assets.resources.models.specs import ModelLoadError

log = logging.getLogger(__name__)

#: Rows one request may carry (a client sends at most `remote.CHUNK_ROWS`).
MAX_ROWS = 4_096
#: Bytes a request body may have; larger is refused before it is read.
MAX_BODY_BYTES = 64 << 20
#: Characters of one text.
MAX_TEXT_CHARS = 1_000_000


class EmbedRequest(BaseModel):
    token_ids: list[list[int]] = Field(max_length=MAX_ROWS)


class TextsRequest(BaseModel):
    texts: list[str] = Field(max_length=MAX_ROWS)


class Metrics:
    """The server's Prometheus metrics (one registry per app, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.info = Gauge(
            "nlp_model_server_model_info",
            "A model the server holds (1), with its version, device, dtype and backend.",
            ["model", "version", "device", "dtype", "backend"],
            registry=r,
        )
        self.batching = BatchMetrics(
            "nlp_model_server",
            "model",
            r,
            requests="Requests",
            rows="Rows (texts or documents)",
            call="model call",
            max_rows=MAX_ROWS,
        )
        self.requests = Counter(
            "nlp_model_server_requests_total",
            "Requests by model, operation and outcome.",
            ["model", "op", "outcome"],
            registry=r,
        )
        self.rows = Counter(
            "nlp_model_server_rows_total", "Rows served.", ["model", "op"], registry=r
        )
        self.ready = Gauge(
            "nlp_model_server_ready", "1 once the default entries are warm.", registry=r
        )


def metric_names() -> set[str]:
    """Every series name the server exports (the alerts and the dashboard may use only these)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def backend_of(model: Any, format: str) -> str:
    """What runs a model: its own `backend` attribute, else spaCy or torch by its format."""
    return str(getattr(model, "backend", "spacy" if format == "spacy" else "torch"))


# -- the model worker: a process of its own -------------------------------------------------
# The HTTP side (event loop, request parsing) and the models share no GIL: in one process,
# 50 clients' requests slowed every forward pass (measured in bench.model_server).
_worker_registry: Any = None


def _worker_start(config: dict[str, Any]) -> None:
    global _worker_registry
    _worker_registry = ModelResource(**config).local_registry()
    parent = os.getppid()

    def exit_with_the_server() -> None:  # a SIGKILLed server must not leave its models behind
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=exit_with_the_server, name="parent-watch", daemon=True).start()


def _worker_describe(name: str) -> dict[str, Any]:
    model = _worker_registry.get(name).model
    spec = _worker_registry.specs[name]
    out: dict[str, Any] = {
        "name": name,
        "model_name": model.name,
        "version": model.version,
        "cache_version": getattr(model, "cache_version", model.version),
        "device": getattr(model, "device", "cpu"),
        "dtype": getattr(model, "dtype", "float32"),
        "backend": backend_of(model, spec.format),
        "settings": result_settings(spec),
        "op": next(
            (
                op
                for op, method in (
                    ("embed", "embed_token_ids"),
                    ("proba", "predict_proba_texts"),
                    ("entities", "entities"),
                )
                if hasattr(model, method)
            ),
            "",
        ),
    }
    fields = (
        "dim",
        "max_length",
        "max_windows",
        "window_overlap",
        "special_tokens",
        "backend_note",
    )
    for field in fields:
        if hasattr(model, field):
            out[field] = getattr(model, field)
    if hasattr(model, "labels"):
        out["labels"] = list(model.labels)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        out["vocab_size"] = int(tokenizer.vocab_size)
    return out


def _worker_run(name: str, items: list[Any]) -> Any:
    model = _worker_registry.get(name).model
    if hasattr(model, "embed_token_ids"):
        return model.embed_token_ids(items)
    if hasattr(model, "predict_proba_texts"):
        return model.predict_proba_texts(items)
    return model.entities(items)


class WorkerDied(ModelLoadError):
    """The model worker process died during a call (it is being replaced: retry)."""


class ModelServer:
    """The entries of one `ModelResource`, loaded in a model worker process, a `Batcher` per
    entry in this one, and the metrics. A worker that dies is replaced (and reloads)."""

    def __init__(self, models: ModelResource, warm: Sequence[str] = ("embedding", "entities")):
        self.models, self.warm = models, warm
        self.specs = models.specs()
        self.metrics = Metrics()
        self.ready = False
        self._config = {name: getattr(models, name) for name in type(models).model_fields}
        self._described: dict[str, dict[str, Any]] = {}
        self._batchers: dict[str, Batcher] = {}
        self._lock = threading.RLock()
        self._pool = self._start_worker()

    def _start_worker(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_start,
            initargs=(self._config,),
        )

    def worker_pid(self) -> int | None:
        processes = list(getattr(self._pool, "_processes", {}) or {})
        return processes[0] if processes else None

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        pool = self._pool
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool as error:
            with self._lock:
                if self._pool is pool:  # the first to see it replaces the worker
                    log.warning("model worker died (%s); starting another", error)
                    self.ready = False
                    self.metrics.ready.set(0)
                    self._described.clear()
                    self._pool = self._start_worker()
                    threading.Thread(target=self.warm_up, daemon=True).start()
            raise WorkerDied(f"the model worker died: {error}; it is being replaced") from error

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def warm_up(self) -> None:
        """Load the entries serving the default tasks (each load runs its warm-up)."""
        for task in self.warm:
            self.entry(self.models.serve_name(task))
        self.ready = True
        self.metrics.ready.set(1)

    def loaded(self) -> list[str]:
        return list(self._described)

    def entry(self, name: str) -> tuple[dict[str, Any], Batcher]:
        if name not in self.specs:
            raise KeyError(name)
        described = self._described.get(name) or self._call(_worker_describe, name)
        with self._lock:
            self._described[name] = described
            if name not in self._batchers:
                self._batchers[name] = Batcher(
                    name, lambda items: self._call(_worker_run, name, items), self.metrics.batching
                )
                self.metrics.info.labels(
                    name,
                    described["version"],
                    described["device"],
                    described["dtype"],
                    described["backend"],
                ).set(1)
            return described, self._batchers[name]

    def describe(self, name: str) -> dict[str, Any]:
        return self.entry(name)[0]


def create_app(server: ModelServer, *, warm_in_background: bool = True) -> FastAPI:
    token = os.environ.get("NLP_MODEL_SERVER_TOKEN") or ""

    async def lifespan(app: FastAPI):
        if warm_in_background:  # /healthz answers while the models load; /readyz after
            threading.Thread(target=server.warm_up, name="warm-up", daemon=True).start()
        else:
            server.warm_up()
        yield
        server.close()

    app = FastAPI(title="nlp model server", lifespan=lifespan)

    def authorised(authorization: str | None = Header(default=None)) -> None:
        if token and not hmac.compare_digest(authorization or "", f"Bearer {token}"):
            raise HTTPException(401, "this model server needs its bearer token")

    @app.middleware("http")
    async def cap_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and (length is None or not length.isdigit()):
            return Response("a POST needs a Content-Length", status_code=411)
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return Response(f"body over {MAX_BODY_BYTES} bytes", status_code=413)
        return await call_next(request)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(response: Response) -> dict[str, Any]:
        if not server.ready:
            response.status_code = 503
        return {"ready": server.ready, "models": server.loaded()}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def known(name: str) -> tuple[Any, Batcher]:
        try:
            return server.entry(name)
        except KeyError:
            raise HTTPException(404, f"no model {name!r} on this server") from None
        except WorkerDied as error:  # a moment: callers retry
            raise HTTPException(503, str(error)) from error
        except ModelLoadError as error:  # it will not load here: callers load it themselves
            raise HTTPException(424, str(error)) from error

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    def models() -> list[dict[str, Any]]:
        return [server.describe(name) for name in server.loaded()]

    @app.get("/v1/models/{name:path}", dependencies=[Depends(authorised)])
    def describe(name: str) -> dict[str, Any]:
        known(name)
        return server.describe(name)

    async def serve(name: str, op: str, items: list[Any]) -> tuple[Any, float]:
        _, batcher = known(name)
        try:
            out, seconds = await asyncio.wrap_future(batcher.submit(items))
        except (ValueError, IndexError) as error:  # the input, not the server
            server.metrics.requests.labels(name, op, "refused").inc()
            raise HTTPException(422, f"{type(error).__name__}: {error}") from error
        except WorkerDied as error:  # callers retry, then fall back
            server.metrics.requests.labels(name, op, "error").inc()
            raise HTTPException(503, str(error)) from error
        except Exception:
            server.metrics.requests.labels(name, op, "error").inc()
            raise
        server.metrics.requests.labels(name, op, "ok").inc()
        server.metrics.rows.labels(name, op).inc(len(items))
        return out, seconds

    @app.post("/v1/models/{name:path}/embed", dependencies=[Depends(authorised)])
    async def embed(name: str, body: EmbedRequest) -> dict[str, Any]:
        model, _ = known(name)
        if model["op"] != "embed":
            raise HTTPException(404, f"{name} does not embed")
        vocab = int(model.get("vocab_size") or 0)
        if vocab and any(i < 0 or i >= vocab for ids in body.token_ids for i in ids):
            raise HTTPException(422, f"token ids must be in [0, {vocab})")
        if any(not ids for ids in body.token_ids):
            raise HTTPException(422, "an empty token list")
        vectors, seconds = await serve(name, "embed", body.token_ids)
        array = np.ascontiguousarray(vectors, dtype="<f4")
        return {
            "dim": int(array.shape[1]) if array.ndim == 2 else 0,
            "vectors": base64.b64encode(array.tobytes()).decode("ascii"),
            "tokens": sum(len(ids) for ids in body.token_ids),
            "seconds": seconds,
        }

    def texts_of(body: TextsRequest) -> list[str]:
        if any(len(text) > MAX_TEXT_CHARS for text in body.texts):
            raise HTTPException(422, f"a text over {MAX_TEXT_CHARS} characters")
        return body.texts

    @app.post("/v1/models/{name:path}/entities", dependencies=[Depends(authorised)])
    async def entities(name: str, body: TextsRequest) -> dict[str, Any]:
        model, _ = known(name)
        if model["op"] != "entities":
            raise HTTPException(404, f"{name} does not find entities")
        found, seconds = await serve(name, "entities", texts_of(body))
        return {"entities": list(found), "seconds": seconds}

    @app.post("/v1/models/{name:path}/proba", dependencies=[Depends(authorised)])
    async def proba(name: str, body: TextsRequest) -> dict[str, Any]:
        model, _ = known(name)
        if model["op"] != "proba":
            raise HTTPException(404, f"{name} does not classify")
        out, seconds = await serve(name, "proba", texts_of(body))
        return {"probabilities": np.asarray(out).tolist(), "seconds": seconds}

    return app


def server_from_env() -> ModelServer:
    """The pipeline's own model resource (`models_from_env`, as the code location builds it),
    configured by the same environment as the runs, so the server's entries are theirs; the
    code location itself (Spark, Kafka, the schema checks) is not loaded."""
    from nlp_assets import settings
    from nlp_assets.resources.models.resource import models_from_env

    models = models_from_env(settings.environment().lake_dir)
    return ModelServer(models.process_config_and_initialize())


def serve(host: str, port: int) -> int:
    """`nlp serve-models`: the model server on host:port (uvicorn, one process)."""
    import uvicorn

    from nlp_assets import logs

    logs.configure()
    os.environ.pop("NLP_MODEL_SERVER_URL", None)  # the server itself loads in-process
    app = create_app(server_from_env())
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0
