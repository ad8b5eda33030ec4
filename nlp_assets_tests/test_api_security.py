"""The API served by uvicorn against the real Postgres (key store and warehouse), Redis (rate
limits) and a real dagster-webserver (backfills): every endpoint x role x bad credential,
hostile bodies, per-record reasons, rate limits, and no document text in the access log."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import polars as pl
import psycopg2
import pytest
import redis

from nlp_assets.api.keys import PostgresKeyStore
from nlp_assets.kernels.ingest import doc_id_for
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA
from nlp_assets.kernels.quarantine import quarantine_frame
from nlp_assets.lake import Lake
from nlp_assets.warehouse import ensure_schema
from nlp_assets_tests.api_server import AUDIENCE, ISSUER, REPO, Signer, api_server, free_port
from nlp_assets_tests.postgres_db import temp_database, url_for

pytestmark = [pytest.mark.api, pytest.mark.postgres, pytest.mark.redis]

DAY = "2026-11-18"
LAKE_DOC = "a1b2c3d4e5f60718"  # in the lake's predictions of DAY
WAREHOUSE_DOC = "0f1e2d3c4b5a6978"  # in the warehouse's v_predictions
QUARANTINED_DOC = "9a8b7c6d5e4f3021"  # in today's quarantine of the cleaned stage
QUARANTINE_REASON = "text is empty after cleaning"
MAX_BODY = 200_000
MAX_BATCH = 50
REDIS_URL = os.getenv("REDIS_TEST_URL", "redis://127.0.0.1:6379/0")


def _prediction(doc_id: str) -> dict:
    return {
        "doc_id": doc_id,
        "ingest_date": date.fromisoformat(DAY),
        "source": "web",
        "lang": "en",
        "is_duplicate": False,
        "sentiment_label": "positive",
        "sentiment_score": 0.91,
        "sentiment_model": "minilm-logreg",
        "sentiment_model_version": "1",
        "entities": [{"text": "Paris", "label": "GPE", "start_char": 0, "end_char": 5}],
        "ner_model": "spacy",
        "ner_model_version": "3.8.0",
        "skipped_reason": None,
    }


def _a_head():  # type: ignore[no-untyped-def]
    """A sentiment head for the bundled embedder's version (its weights' hash), untrained."""
    import numpy as np

    from nlp_assets.kernels.sentiment import SentimentHead
    from nlp_assets.resources.models import (
        DEFAULT_EMBEDDING_MODEL,
        default_embedding_model_path,
        fingerprint,
    )

    version = fingerprint(Path(default_embedding_model_path()))
    coef = np.random.default_rng(0).normal(size=(1, 384))
    return SentimentHead(
        ("negative", "positive"), coef, np.zeros(1), DEFAULT_EMBEDDING_MODEL, version
    )


def _seed(root: Path, database_url: str) -> None:
    """A day of results in the lake, a report, and one prediction row in the warehouse."""
    frame = pl.DataFrame([_prediction(LAKE_DOC)], schema=PREDICTIONS_SCHEMA)
    Lake(root / "lake").write("predictions", DAY, frame)
    aggregates = pl.DataFrame(
        {"ingest_date": [date.fromisoformat(DAY)], "lang": ["en"], "n_docs": [1]}
    )
    Lake(root / "lake").write("aggregates", DAY, aggregates)
    today = datetime.now(UTC).date()
    refused = quarantine_frame(
        [
            {
                "stage": "cleaned_text",
                "ingest_date": today,
                "doc_id": QUARANTINED_DOC,
                "reason": QUARANTINE_REASON,
                "raw": b"<p></p>",
            }
        ]
    )
    Lake(root / "lake").write_quarantine("cleaned_text", today.isoformat(), refused)
    Lake(root / "lake").write("sentiment_model", None, _a_head().to_frame())  # /v1/predict
    (root / "reports" / DAY).mkdir(parents=True)
    (root / "reports" / DAY / "report.html").write_text("<h1>report</h1>")
    conn = psycopg2.connect(database_url)
    try:
        ensure_schema(conn, "nlp")
        with conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO nlp.predictions (ingest_date, part, doc_id, source, lang, "
                "is_duplicate, sentiment_label, sentiment_score, sentiment_model, "
                "sentiment_model_version, entities, ner_model, ner_model_version, run_id) "
                "VALUES (%s, 'day', %s, 'web', 'en', false, 'negative', 0.1, 'm', '1', "
                "'[]'::jsonb, 'spacy', '3.8.0', 'r1')",
                [datetime.now(UTC).date(), WAREHOUSE_DOC],
            )
    finally:
        conn.close()


def _start_webserver(home: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster-webserver")),
                "-w",
                str(REPO / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=REPO,
            env={**os.environ, **env, "DAGSTER_HOME": str(home)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}"


def _wait_webserver(process: subprocess.Popen, url: str, log: Path, timeout_s: float = 150):
    deadline = time.monotonic() + timeout_s
    query = {"query": "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited: {log.read_text()[-2000:]}")
        try:
            body = httpx.post(f"{url}/graphql", json=query, timeout=5).json()
            if body["data"]["repositoriesOrError"].get("nodes"):
                return
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass
        time.sleep(1)
    raise RuntimeError(f"dagster-webserver not ready in {timeout_s} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("api")
    prefix = f"nlp-test-{uuid.uuid4().hex[:8]}"
    signer = Signer()
    data_env = {
        "NLP_DATA_DIR": str(root),
        "NLP_LAKE_DIR": str(root / "lake"),
        "NLP_LANDING_DIR": str(root / "landing"),
        "NLP_REPORTS_DIR": str(root / "reports"),
        "HF_HUB_OFFLINE": "1",
    }
    home = root / "dagster_home"
    webserver, dagster_url = _start_webserver(home, data_env, root / "webserver.log")
    try:
        with temp_database("nlp_api") as database:
            database_url = url_for(database)
            _seed(root, database_url)
            store = PostgresKeyStore(database_url)
            keys = {
                role: store.create(f"test {role}", role, channels=["api", "web"])[1]
                for role in ROLES
            }
            revoked_key, revoked = store.create("revoked", "operator")
            store.revoke(revoked_key.key_id)
            keys["revoked"] = revoked
            env = {
                **data_env,
                "DATABASE_URL": database_url,
                "REDIS_URL": REDIS_URL,
                "NLP_API_REDIS_PREFIX": prefix,
                "NLP_API_KEY_CACHE_SECONDS": "0",
                "NLP_API_RATE_PER_SECOND": "2",
                "NLP_API_RATE_BURST": "60",
                "NLP_API_AUTH_FAILURE_BURST": "10000",  # the matrix fails on purpose, often
                "NLP_API_MAX_BODY_BYTES": str(MAX_BODY),
                "NLP_API_MAX_BATCH": str(MAX_BATCH),
                "NLP_JWT_ISSUER": ISSUER,
                "NLP_JWT_AUDIENCE": AUDIENCE,
                "NLP_JWT_PUBLIC_KEY": signer.public_pem,
                "NLP_DAGSTER_GRAPHQL_URL": f"{dagster_url}/graphql",
                "NLP_PARTITIONS_START": "2026-01-01",
            }
            log = root / "api.log"
            with api_server(env, log) as url:
                _wait_webserver(webserver, dagster_url, root / "webserver.log")
                yield {
                    "url": url,
                    "keys": keys,
                    "signer": signer,
                    "root": root,
                    "log": log,
                    "prefix": prefix,
                    "database_url": database_url,
                    "dagster_home": home,
                    "env": env,
                }
    finally:
        webserver.terminate()
        webserver.wait(timeout=20)
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


ROLES = ["reader", "submitter", "operator"]
RANK = {role: i for i, role in enumerate(ROLES)}
# (method, path, JSON body, least role). Every route of the app but /healthz and the docs.
ENDPOINTS = [
    ("GET", "/readyz", None, "reader"),
    ("GET", "/metrics", None, "reader"),
    ("POST", "/v1/documents", {"id": "m1", "text": "matrix document"}, "submitter"),
    ("POST", "/v1/predict", {"texts": ["a matrix text"]}, "submitter"),
    ("GET", f"/v1/documents/{WAREHOUSE_DOC}", None, "reader"),
    ("GET", f"/v1/days/{DAY}/predictions", None, "reader"),
    ("GET", f"/v1/days/{DAY}/aggregates", None, "reader"),
    ("GET", f"/v1/days/{DAY}/report", None, "reader"),
    ("POST", "/v1/backfills", {"from": DAY, "to": DAY}, "operator"),
    ("GET", "/v1/runs/{backfill}", None, "operator"),
]


def _call(stack, method: str, path: str, body, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, stack["url"] + path, json=body, headers=headers, timeout=60)


def _a_backfill(stack) -> str:
    response = _call(
        stack, "POST", "/v1/backfills", {"from": DAY, "to": DAY}, stack["keys"]["operator"]
    )
    assert response.status_code == 202, response.text
    return response.json()["backfill_id"]


def test_routes_in_openapi_are_the_ones_the_matrix_walks(stack):
    paths = httpx.get(
        stack["url"] + "/openapi.json",
        headers={"Authorization": f"Bearer {stack['keys']['reader']}"},
    ).json()["paths"]
    walked = {path.replace("{backfill}", "{run_id}") for _, path, _, _ in ENDPOINTS}
    normalised = {p.replace(WAREHOUSE_DOC, "{doc_id}").replace(DAY, "{day}") for p in walked} | {
        "/healthz"
    }
    assert set(paths) == normalised


@pytest.mark.parametrize("method,path,body,least", ENDPOINTS, ids=[e[1] for e in ENDPOINTS])
def test_every_endpoint_refuses_missing_bad_expired_and_revoked_credentials(
    stack, method, path, body, least
):
    path = path.replace("{backfill}", "nothing-here")
    signer = stack["signer"]
    credentials = {
        "none": None,
        "malformed": "not-a-token",
        "unknown key": "nlp_0123456789ab_" + "x" * 40,
        "tampered key": stack["keys"]["operator"][:-4] + "AAAA",
        "expired jwt": signer.token(["operator"], expires_in=-120),
        "foreign jwt": Signer().token(["operator"]),
        "wrong audience": signer.token(["operator"], audience="someone-else"),
        "revoked key": stack["keys"]["revoked"],
    }
    for name, token in credentials.items():
        response = _call(stack, method, path, body, token)
        assert response.status_code == 401, (name, response.status_code, response.text)
        assert response.headers.get("www-authenticate") == "Bearer", name
        assert response.json()["detail"], name


@pytest.mark.parametrize("method,path,body,least", ENDPOINTS, ids=[e[1] for e in ENDPOINTS])
def test_every_endpoint_gives_each_role_2xx_or_403_by_the_role_table(
    stack, method, path, body, least
):
    if "{backfill}" in path:
        path = path.replace("{backfill}", _a_backfill(stack))
    for role in ROLES:
        for kind, token in (("key", stack["keys"][role]), ("jwt", stack["signer"].token([role]))):
            response = _call(stack, method, path, body, token)
            if RANK[role] < RANK[least]:
                assert response.status_code == 403, (role, kind, response.text)
                assert f"needs role '{least}'" in response.json()["detail"]
            else:
                assert 200 <= response.status_code < 300, (role, kind, response.text)


def test_healthz_is_the_only_anonymous_endpoint(stack):
    assert httpx.get(stack["url"] + "/healthz").json() == {"status": "ok"}
    for path in ("/docs", "/openapi.json", "/docs/static/swagger-ui.css", "/nowhere"):
        assert httpx.get(stack["url"] + path).status_code == 401, path


def test_jwt_without_a_known_role_is_forbidden(stack):
    response = _call(stack, "GET", "/readyz", None, stack["signer"].token(["admin"]))
    assert response.status_code == 403
    assert "no role" in response.json()["detail"]


def test_readyz_checks_each_dependency_by_name(stack):
    body = _call(stack, "GET", "/readyz", None, stack["keys"]["reader"]).json()
    assert body["checks"] == {
        "postgres": "ok",
        "redis": "ok",
        "kafka": "not configured",
        "dagster": "ok",
        "storage": "ok",
    }


def test_readyz_names_the_failed_dependency(stack, tmp_path):
    env = {**stack["env"], "NLP_DAGSTER_GRAPHQL_URL": f"http://127.0.0.1:{free_port()}/graphql"}
    with api_server(env, tmp_path / "api.log") as url:
        key = stack["keys"]["reader"]
        response = httpx.get(url + "/readyz", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["dagster"]
    assert body["checks"]["dagster"].startswith("failed: ")
    assert body["checks"]["postgres"] == "ok"


def test_submit_gives_pipeline_doc_ids_and_per_record_reasons(stack):
    good = [{"id": "g1", "text": "Lovely day in Paris", "source": "web"}, {"id": 7, "text": "ok"}]
    bad = [
        {"id": "b1"},
        {"id": "b2", "text": 5},
        "a string",
        {"id": "b3", "text": "x", "timestamp": "never"},
    ]
    response = _call(stack, "POST", "/v1/documents", [*good, *bad], stack["keys"]["submitter"])
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 4)
    results = body["results"]
    assert [r["status"] for r in results] == ["accepted"] * 2 + ["rejected"] * 4
    # the channel the key is bound to, namespaced: never a landing file's or Kafka's doc id
    assert results[0]["doc_id"] == doc_id_for("api:web", "g1", "Lovely day in Paris")
    assert results[1]["doc_id"] == doc_id_for("api:api", "7", "ok")
    assert "missing required field(s): text" in results[2]["reason"]
    assert "must be a string" in results[3]["reason"]
    assert "JSON object" in results[4]["reason"]
    assert "invalid timestamp" in results[5]["reason"]
    # written atomically to today's landing folder, good records only, readable by the stage
    destination = results[0]["destination"]
    assert destination.startswith("landing:") and destination == results[1]["destination"]
    landed = stack["root"] / "landing" / destination.removeprefix("landing:")
    lines = [json.loads(line) for line in landed.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["g1", 7]
    assert not [p for p in landed.parent.iterdir() if p.name.startswith(".")]
    # idempotent: the same document again gets the same doc_id
    again = _call(stack, "POST", "/v1/documents", good[0], stack["keys"]["submitter"]).json()
    assert again["results"][0]["doc_id"] == results[0]["doc_id"]


def test_only_bad_records_is_422_with_each_reason(stack):
    response = _call(
        stack, "POST", "/v1/documents", [{"id": "x"}, {"text": "t"}], stack["keys"]["submitter"]
    )
    assert response.status_code == 422
    reasons = [r["reason"] for r in response.json()["results"]]
    assert reasons == ["missing required field(s): text", "missing required field(s): id"]


def _post_raw(stack, content, content_type="application/json") -> httpx.Response:
    return httpx.post(
        stack["url"] + "/v1/documents",
        content=content,
        headers={
            "Authorization": f"Bearer {stack['keys']['submitter']}",
            "Content-Type": content_type,
        },
        timeout=60,
    )


HOSTILE = {
    "huge body": (b'{"id": "1", "text": "' + b"a" * (MAX_BODY + 10) + b'"}', 413, "at most"),
    "too many records": (
        json.dumps([{"id": str(i), "text": "t"} for i in range(MAX_BATCH + 1)]).encode(),
        413,
        f"at most {MAX_BATCH}",
    ),
    "deeply nested body": (b"[" * 50_000 + b"]" * 50_000, 400, "nested too deeply"),
    "invalid UTF-8 body": (b'{"id": "1", "text": "caf\xe9"}', 400, "not valid UTF-8"),
    "not JSON": (b"<xml/>", 400, "not valid JSON"),
    "a bare string": (b'"hello"', 400, "got str"),
    "empty body": (b"", 400, "not valid JSON"),
    "huge integer": (b'{"id": ' + b"9" * 5000 + b', "text": "t"}', 400, "not valid JSON"),
    "wrong types only": (b'[{"id": [1], "text": {"a": 1}}]', 422, "must be"),
    "NaN in a record": (
        b'{"id": "n", "text": "t", "metadata": {"x": NaN}}',
        422,
        "not JSON compliant",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_bodies_get_a_clear_4xx_never_a_500(stack, name):
    content, status, words = HOSTILE[name]
    response = _post_raw(stack, content)
    assert response.status_code == status, response.text[:300]
    assert words in response.text


def test_streamed_body_past_the_cap_is_413_before_it_is_read_whole(stack):
    def chunks():
        for _ in range(100):
            yield b"x" * 10_000

    response = _post_raw(stack, chunks(), "application/x-ndjson")
    assert response.status_code == 413


def test_ndjson_bad_lines_get_reasons_and_good_lines_land(stack):
    lines = [
        b'{"id": "u1", "text": "fine line"}',
        b'{"id": "u2", "text": "caf\xe9 in latin-1"}',
        b'{"id": "u3", "text": "deep", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"id": "u4", "text": "' + b"z" * 70_000 + b'"}',
        b"{broken",
    ]
    response = _post_raw(stack, b"\n".join(lines), "application/x-ndjson")
    assert response.status_code == 202
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted"] + ["rejected"] * 4
    assert results[1]["reason"] == "not valid UTF-8"
    assert "RecursionError" in results[2]["reason"] or "nest" in results[2]["reason"]
    assert results[3]["reason"].startswith("oversized")
    assert results[4]["reason"].startswith("invalid JSON")


def test_multipart_ndjson_upload(stack):
    response = httpx.post(
        stack["url"] + "/v1/documents",
        files={"file": ("docs.ndjson", b'{"id": "f1", "text": "from a file"}\n')},
        headers={"Authorization": f"Bearer {stack['keys']['submitter']}"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["results"][0]["doc_id"] == doc_id_for("api:api", "f1", "from a file")


def test_document_status_reads_warehouse_then_lake(stack):
    reader = stack["keys"]["reader"]
    from_warehouse = _call(stack, "GET", f"/v1/documents/{WAREHOUSE_DOC}", None, reader).json()
    assert from_warehouse["status"] == "processed"
    assert from_warehouse["prediction"]["sentiment_label"] == "negative"
    assert from_warehouse["prediction"]["sentiment_model"] == "m@1"
    from_lake = _call(stack, "GET", f"/v1/documents/{LAKE_DOC}", None, reader)
    assert from_lake.status_code == 404  # DAY is outside the last N days the status looks at
    missing = _call(stack, "GET", "/v1/documents/ffffffffffffffff", None, reader)
    assert missing.status_code == 404 and "not yet processed" in missing.json()["detail"]


def test_document_status_is_accepted_with_where_and_when_until_processed(stack):
    text = f"Accepted but not yet processed {uuid.uuid4().hex}"
    posted = _call(
        stack, "POST", "/v1/documents", {"id": "acc-1", "text": text}, stack["keys"]["submitter"]
    )
    assert posted.status_code == 202, posted.text
    receipt = posted.json()["results"][0]
    doc_id = receipt["doc_id"]
    assert doc_id == doc_id_for("api:api", "acc-1", text)
    response = _call(stack, "GET", f"/v1/documents/{doc_id}", None, stack["keys"]["reader"])
    assert response.status_code == 200, response.text
    body = response.json()
    today = datetime.now(UTC).date().isoformat()
    assert body["status"] == "accepted" and body["doc_id"] == doc_id
    assert body["destination"] == receipt["destination"]  # landing:<today>/api/<part>
    assert body["day"] == today
    accepted_at = datetime.fromisoformat(body["accepted_at"])
    assert abs((datetime.now(UTC) - accepted_at).total_seconds()) < 120
    # kept in Postgres (DATABASE_URL is set), beside the key store
    conn = psycopg2.connect(stack["database_url"])
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute("SELECT destination FROM nlp_api.accepted WHERE doc_id = %s", [doc_id])
            assert cursor.fetchall() == [(receipt["destination"],)]
    finally:
        conn.close()


def test_document_status_is_quarantined_with_the_reason(stack):
    response = _call(
        stack, "GET", f"/v1/documents/{QUARANTINED_DOC}", None, stack["keys"]["reader"]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "quarantined"
    assert body["reason"] == QUARANTINE_REASON
    assert body["stage"] == "cleaned_text"
    assert body["day"] == datetime.now(UTC).date().isoformat()
    assert "raw" not in body and "payload" not in body  # no document text in the answer


def test_predictions_in_json_csv_and_parquet(stack):
    headers = {"Authorization": f"Bearer {stack['keys']['reader']}"}
    url = f"{stack['url']}/v1/days/{DAY}/predictions"
    page = httpx.get(url, headers=headers, params={"label": "positive"}).json()
    assert page["total"] == 1 and page["items"][0]["doc_id"] == LAKE_DOC
    assert page["items"][0]["entities"][0]["text"] == "Paris"
    assert httpx.get(url, headers=headers, params={"label": "negative"}).json()["total"] == 0
    csv = httpx.get(url, headers={**headers, "Accept": "text/csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert pl.read_csv(csv.content)["doc_id"].to_list() == [LAKE_DOC]
    parquet = httpx.get(url, headers={**headers, "Accept": "application/vnd.apache.parquet"})
    frame = pl.read_parquet(parquet.content)
    assert frame["doc_id"].to_list() == [LAKE_DOC]
    assert frame["entities"][0][0]["label"] == "GPE"
    bad = httpx.get(f"{stack['url']}/v1/days/yesterday/predictions", headers=headers)
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.json()["detail"]


def test_backfill_through_the_api_shows_in_the_dagster_instance(stack):
    import dagster as dg

    response = _call(
        stack,
        "POST",
        "/v1/backfills",
        {"from": "2026-11-01", "to": "2026-11-03"},
        stack["keys"]["operator"],
    )
    assert response.status_code == 202, response.text
    backfill_id = response.json()["backfill_id"]
    with dg.DagsterInstance.from_config(str(stack["dagster_home"])) as inst:
        backfill = inst.get_backfill(backfill_id)
    assert backfill is not None
    assert sorted(backfill.partition_names or []) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert backfill.tags["nlp/requested_by"].startswith("key:")
    status = _call(stack, "GET", f"/v1/runs/{backfill_id}", None, stack["keys"]["operator"])
    assert status.json()["kind"] == "backfill"
    assert status.json()["partitions"] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    reversed_range = _call(
        stack, "POST", "/v1/backfills", {"from": DAY, "to": "2026-11-01"}, stack["keys"]["operator"]
    )
    assert reversed_range.status_code == 422


def test_rate_limit_is_429_with_retry_after_then_recovers(stack):
    key = PostgresKeyStore(stack["database_url"]).create("burst", "reader")
    token = key[1]

    async def burst() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=120) as client:
            url = f"{stack['url']}/v1/days/{DAY}/aggregates"
            return list(await asyncio.gather(*(client.get(url) for _ in range(200))))

    responses = asyncio.run(burst())
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429}, statuses
    assert statuses.count(200) >= 60  # the burst, plus what the clock refilled meanwhile
    response = next(r for r in responses if r.status_code == 429)
    assert "rate limit of 2/s (burst 60)" in response.json()["detail"]
    retry_after = int(response.headers["retry-after"])
    assert retry_after == 1  # under one token short, at 2/s
    bucket = f"{stack['prefix']}:bucket:key:{key[0].key_id}"
    assert redis.Redis.from_url(REDIS_URL).exists(bucket)  # the bucket lives in Redis
    time.sleep(retry_after)
    assert _call(stack, "GET", f"/v1/days/{DAY}/aggregates", None, token).status_code == 200


def test_metrics_count_requests_and_rejections_and_the_log_has_no_text(stack):
    marker = f"secret-text-{uuid.uuid4().hex}"
    _call(stack, "POST", "/v1/documents", {"id": "s1", "text": marker}, stack["keys"]["submitter"])
    _call(stack, "POST", "/v1/documents", {"id": "s2"}, stack["keys"]["submitter"])
    metrics = _call(stack, "GET", "/metrics", None, stack["keys"]["reader"]).text
    assert 'nlp_api_requests_total{method="POST",route="/v1/documents",status="202"}' in metrics
    assert 'nlp_api_rejections_total{reason="missing required field(s)"}' in metrics
    assert 'nlp_api_rejections_total{reason="unauthenticated"}' in metrics
    assert "nlp_api_request_seconds_bucket" in metrics
    log = stack["log"].read_text()
    assert "POST /v1/documents 202" in log
    assert marker not in log


CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts" / "browser"


@pytest.mark.browser
def test_swagger_ui_in_chromium_calls_the_api_once_authorised_with_a_key(stack):
    """/docs in Debian's Chromium (no CDN: the page's own files): a call made from the page is
    401 without a credential and 200 once an API key is entered through Authorize."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing (.ci/services.sh installs it)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            # the page and its schema need a reader, as the ingress's sign-in would add it;
            # the calls made from the page carry only what Authorize gives them
            reader = {"Authorization": f"Bearer {stack['keys']['reader']}"}

            def signed_in(route) -> None:
                route.continue_(headers={**route.request.headers, **reader})

            page.route(re.compile(r".*/(docs|openapi\.json)([/?].*)?$"), signed_in)
            page.goto(stack["url"] + "/docs")
            page.locator(".swagger-ui .info .title").wait_for()
            assert "NLP pipeline API" in page.locator(".swagger-ui .info .title").inner_text()
            operation = page.locator(
                "#operations-results-get_aggregates_v1_days__day__aggregates_get"
            )

            def execute() -> str:
                operation.get_by_role("button", name="Execute").click()
                status = operation.locator(
                    ".live-responses-table tr.response .response-col_status"
                ).first
                status.wait_for()
                text = status.inner_text().strip()
                operation.get_by_role("button", name="Clear").click()
                return text

            operation.locator(".opblock-summary").click()
            operation.get_by_role("button", name="Try it out").click()
            operation.locator('input[placeholder="day"]').fill(DAY)
            assert execute().startswith("401")  # the page loads; its calls need a credential

            page.locator(".swagger-ui .auth-wrapper button.authorize").click()
            dialog = page.locator(".dialog-ux .modal-ux")
            api_key = dialog.locator(".auth-container").filter(has_text="APIKeyHeader")
            api_key.locator("input").fill(stack["keys"]["reader"])
            api_key.locator("button.authorize").click()  # its aria-label: Apply credentials
            page.screenshot(path=ARTIFACTS / "api-01-authorised.png")
            dialog.locator("button.btn-done").first.click()

            assert execute().startswith("200")
            operation.get_by_role("button", name="Execute").click()
            body = operation.locator(
                ".live-responses-table tr.response .response-col_description pre"
            ).first
            body.wait_for()
            assert '"n_docs": 1' in body.inner_text()
            page.screenshot(path=ARTIFACTS / "api-02-aggregates-200.png", full_page=True)
        finally:
            browser.close()
