"""`POST /v1/predict` under 50 concurrent clients, one short text a request, against the batch
path's model rate, in one run.

- the batch path: the same registry's embedder and entity model called in process on 2,000
  short texts in whole batches (what a run's features and predictions steps do): documents/s;
- the API (uvicorn, as deployed) with the model server (`NLP_MODEL_SERVER_URL`), and without
  it (the models in the API process), each loaded by `wrk` (50 connections, one short text a
  request, no text sent twice, so the result cache answers none): p50 and p99 latency and
  requests/s, and requests/s as a share of the model rate. The API batches the requests that
  arrive together into one kernel call (`nlp_api_predict_batch_requests` says how many).

By Little's law, 50 clients waiting on a server that answers R requests/s see a mean latency
of about 50 / R: a p50 of 15 ms needs R of about 3,300/s. Run: `python -m bench.predict_api`.
Needs `wrk` (Debian's package).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import httpx

from bench.model_server import wrk_load
from bench.pipeline import documents
from bench.run_start import prepare
from nlp_assets.api.keys import FileKeyStore
from nlp_assets.resources.models import ModelResource
from nlp_assets_tests.api_server import api_server
from nlp_assets_tests.services import model_server


def model_rate(texts: list[str], batch: int | None = None) -> float:
    """Documents/s of embeddings and entities in process, whole batches (the batch path), or
    `batch` texts a call (what the API's kernel calls can take when each of N clients has one
    text in flight: at most N)."""
    models = ModelResource()
    registry = models.local_registry()
    embedder = registry.get(models.serve_name("embedding")).model
    ner = registry.get(models.serve_name("entities")).model
    embedder.embed_texts(texts[:200])
    ner.entities(texts[:200])
    size = batch or len(texts)
    started = time.perf_counter()
    for start in range(0, len(texts), size):
        embedder.embed_texts(texts[start : start + size])
        ner.entities(texts[start : start + size])
    return len(texts) / (time.perf_counter() - started)


def requests_per_call(url: str, key: str) -> float:
    """Mean `POST /v1/predict` requests a kernel call answered (the API's own metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers={"X-API-Key": key}, timeout=30).text
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("nlp_api_predict_batch_requests")
    }
    calls = samples.get("nlp_api_predict_batch_requests_count", 0.0)
    return samples.get("nlp_api_predict_batch_requests_sum", 0.0) / calls if calls else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args(argv)
    texts = documents("short", 2_000)
    rate = model_rate(texts)
    print(f"batch path's model rate (embeddings + entities): {rate:.1f} docs/s, short texts")
    ceiling = model_rate(texts[:1_000], args.clients)
    print(
        f"the same models, {args.clients} texts a call (the most {args.clients} clients with "
        f"one text each can put in one kernel call): {ceiling:.1f} docs/s"
    )

    root = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    prepare(root / "lake", "2026-11-17", 10)  # a sentiment head the API reads
    _, key = FileKeyStore(root / "keys.json").create("bench", "submitter")
    env = {
        "NLP_DATA_DIR": str(root),
        "NLP_LAKE_DIR": str(root / "lake"),
        "NLP_LANDING_DIR": str(root / "landing"),
        "NLP_API_KEYS_FILE": str(root / "keys.json"),
        "NLP_API_RATE_PER_SECOND": "1000000",
        "NLP_API_RATE_BURST": "1000000",
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "KAFKA_BOOTSTRAP_SERVERS": "",
    }
    body = {"texts": [texts[7]]}
    figures: dict[str, tuple[float, float, float]] = {}
    batching: dict[str, float] = {}
    with model_server(root) as (server_url, _):
        for name, extra in (
            ("with the model server", {"NLP_MODEL_SERVER_URL": server_url}),
            ("models in the API process", {"NLP_MODEL_SERVER_URL": ""}),
        ):
            with api_server({**env, **extra}, root / f"api-{len(figures)}.log") as url:
                warm = httpx.post(
                    f"{url}/v1/predict", json=body, headers={"X-API-Key": key}, timeout=300
                )
                warm.raise_for_status()
                figures[name] = wrk_load(
                    f"{url}/v1/predict",
                    body,
                    args.clients,
                    args.seconds,
                    root,
                    {"X-API-Key": key},
                    distinct_texts=texts,
                )
                batching[name] = requests_per_call(url, key)
    print(
        f"\nPOST /v1/predict, one short text a request, {args.clients} clients (wrk, "
        f"{args.seconds} s)"
    )
    print(
        f"{'':<28} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'of model rate':>14} "
        f"{'of ' + str(args.clients) + '-text rate':>16} {'Little p50 bound ms':>20} "
        f"{'requests a call':>16}"
    )
    for name, (p50, p99, rps) in figures.items():
        print(
            f"{name:<28} {p50:8.1f} {p99:8.1f} {rps:8.1f} {rps / rate:14.1%} "
            f"{rps / ceiling:16.1%} {args.clients / rps * 1000:20.1f} {batching[name]:16.1f}"
        )
    print(
        json.dumps(
            {
                "model_rate": rate,
                "model_rate_at_clients_batch": ceiling,
                **{k: [*v, batching[k]] for k, v in figures.items()},
            }
        )
    )
    print(f"load average: {os.getloadavg()[0]:.2f}; cores: {len(os.sched_getaffinity(0))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
