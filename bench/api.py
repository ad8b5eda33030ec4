"""API figures beside their ceiling: submit throughput (docs/s through batches) and read
latency p50/p99 under N concurrent clients, against the real app and a bare FastAPI endpoint
served the same way (uvicorn, one worker) in the same run; then the good clients' read p99
again with a hostile mix (`--hostile-share` of the requests oversized or malformed: 8 MiB
anonymous bodies, 8 MiB arrays past the record cap, deep nesting, broken JSON, forged keys).

    python -m bench.api --docs 20000 --batch 500 --clients 50 --reads 2000 --hostile-share 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import polars as pl

from nlp_assets.api.keys import FileKeyStore
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA
from nlp_assets.lake import Lake
from nlp_assets_tests.api_server import api_server

DAY = "2026-11-18"
BARE_APP = """
from fastapi import FastAPI, Request
def create_app():
    app = FastAPI()
    @app.post("/v1/documents")
    async def post(request: Request):
        body = await request.body()
        return {"accepted": body.count(b"\\n")}
    @app.get("/v1/days/{day}/predictions")
    def read(day: str):
        return {"items": []}
    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}
    return app
"""


def _batches(docs: int, batch: int) -> list[bytes]:
    lines = [
        json.dumps({"id": f"b{i}", "text": f"Bench document {i}: the service was fine."}).encode()
        for i in range(docs)
    ]
    return [b"\n".join(lines[i : i + batch]) + b"\n" for i in range(0, docs, batch)]


async def _submit(url: str, token: str, batches: list[bytes], clients: int) -> float:
    queue = list(batches)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:

        async def worker() -> None:
            while queue:
                response = await http.post("/v1/documents", content=queue.pop())
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - started


def _hostile(token: str) -> list[tuple[str, dict[str, str], bytes]]:
    """(path, headers, body) of the hostile requests, sent in turn."""
    tiny = b"[" + b",".join(b'{"id":"%d","text":"t"}' % i for i in range(300_000)) + b"]"
    submit = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return [
        ("/v1/backfills", {"Content-Type": "application/json"}, b'{"pad": "' + b"a" * 2**23),
        ("/v1/documents", submit, tiny),
        ("/v1/documents", submit, b"[" * 100_000 + b"]" * 100_000),
        ("/v1/documents", submit, b'[{"id": "1", "text": "broken' + b"x" * 100_000),
        ("/v1/documents", {**submit, "Authorization": "Bearer nlp_0123456789ab_" + "x" * 43},
         tiny),
    ]  # fmt: skip


async def _reads(
    url: str, token: str, reads: int, clients: int, hostile_share: float = 0.0
) -> list[float]:
    """Latencies of the good clients' reads; with `hostile_share`, that share of all requests
    is hostile instead (their latencies are not counted)."""
    latencies: list[float] = []
    left = [reads]
    sent = [0]
    every = round(1 / hostile_share) if hostile_share else 0
    attacks = _hostile(token) if every else []
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as h:

        async def worker() -> None:
            while left[0] > 0:
                sent[0] += 1
                if every and sent[0] % every == 0:
                    path, extra, body = attacks[(sent[0] // every) % len(attacks)]
                    # 401, 400 or 413, or the connection closed on an oversized body
                    with contextlib.suppress(httpx.TransportError):
                        await h.post(path, content=body, headers=extra)
                    continue
                left[0] -= 1
                started = time.perf_counter()
                response = await h.get(f"/v1/days/{DAY}/predictions", params={"limit": 50})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--reads", type=int, default=2_000)
    parser.add_argument("--day-rows", type=int, default=5_000, help="predictions in the day")
    parser.add_argument(
        "--hostile-share", type=float, default=0.01, help="share of hostile requests (0: none)"
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-api-"))
    rows = [
        {
            "doc_id": f"{i:016x}",
            "ingest_date": date.fromisoformat(DAY),
            "source": "web",
            "lang": "en",
            "is_duplicate": False,
            "sentiment_label": "positive" if i % 2 else "negative",
            "sentiment_score": (i % 100) / 100,
            "sentiment_model": "m",
            "sentiment_model_version": "1",
            "entities": [{"text": "Paris", "label": "GPE", "start_char": 0, "end_char": 5}],
            "ner_model": "spacy",
            "ner_model_version": "3.8.0",
            "skipped_reason": None,
        }
        for i in range(args.day_rows)
    ]
    Lake(root / "lake").write("predictions", DAY, pl.DataFrame(rows, schema=PREDICTIONS_SCHEMA))
    _, token = FileKeyStore(root / "keys.json").create("bench", "operator")
    (root / "bare_app.py").write_text(BARE_APP)
    env = {
        "NLP_DATA_DIR": str(root),
        "NLP_LAKE_DIR": str(root / "lake"),
        "NLP_LANDING_DIR": str(root / "landing"),
        "NLP_API_KEYS_FILE": str(root / "keys.json"),
        "NLP_API_RATE_PER_SECOND": "1000000",
        "NLP_API_RATE_BURST": "1000000",
        "NLP_API_AUTH_FAILURE_BURST": "1000000",
        "DATABASE_URL": "",
        "REDIS_URL": os.getenv("BENCH_REDIS_URL", ""),
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "PYTHONPATH": str(root),
    }
    batches = _batches(args.docs, args.batch)
    figures = {}
    for name, target in (("api", None), ("bare", "bare_app:create_app")):
        with api_server(env, root / f"{name}.log", app=target) as url:
            seconds = asyncio.run(_submit(url, token, batches, min(args.clients, len(batches))))
            latencies = asyncio.run(_reads(url, token, args.reads, args.clients))
            if name == "api" and args.hostile_share:
                mixed = asyncio.run(
                    _reads(url, token, args.reads, args.clients, args.hostile_share)
                )
                figures["api_hostile"] = {"p50_ms": _pct(mixed, 50), "p99_ms": _pct(mixed, 99)}
        figures[name] = {
            "docs_per_s": args.docs / seconds,
            "p50_ms": _pct(latencies, 50),
            "p99_ms": _pct(latencies, 99),
        }
    api, bare = figures["api"], figures["bare"]
    ratio = api["docs_per_s"] / bare["docs_per_s"]
    print(
        f"submit: {api['docs_per_s']:,.0f} docs/s through batches of {args.batch} "
        f"(bare FastAPI {bare['docs_per_s']:,.0f}; ratio {ratio:.2f})"
    )
    print(
        f"read {args.clients} clients: p50 {api['p50_ms']:.1f} ms, p99 {api['p99_ms']:.1f} ms "
        f"(bare {bare['p50_ms']:.1f} / {bare['p99_ms']:.1f} ms; p50 ratio "
        f"{api['p50_ms'] / bare['p50_ms']:.1f}x, p99 ratio {api['p99_ms'] / bare['p99_ms']:.1f}x)"
    )
    if "api_hostile" in figures:
        hostile = figures["api_hostile"]
        print(
            f"read {args.clients} good clients with {args.hostile_share:.0%} hostile requests: "
            f"p50 {hostile['p50_ms']:.1f} ms, p99 {hostile['p99_ms']:.1f} ms (without: "
            f"{api['p50_ms']:.1f} / {api['p99_ms']:.1f} ms; p99 ratio "
            f"{hostile['p99_ms'] / api['p99_ms']:.2f}x)"
        )
    json.dump(figures, sys.stderr)


if __name__ == "__main__":
    main()
