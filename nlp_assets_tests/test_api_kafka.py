"""The API's Kafka sink against the real test broker (Tansu): with KAFKA_BOOTSTRAP_SERVERS
set, accepted documents go to the topic, keyed by doc_id, as messages the raw stage accepts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from nlp_assets.api.keys import FileKeyStore
from nlp_assets.kafka.messages import validate_message
from nlp_assets.kernels.ingest import doc_id_for, normalise_record
from nlp_assets_tests.api_server import api_server
from nlp_assets_tests.kafka_broker import Broker

pytestmark = [pytest.mark.api, pytest.mark.kafka]

DOCS = [
    {"id": "k1", "text": "The train to Berlin was on time and comfortable."},
    {"id": 2, "text": "Awful support, I waited an hour.", "source": "support"},
    {"id": "k3", "text": "Ten out of ten.", "timestamp": "2026-11-20T10:00:00Z", "priority": 3},
]


def test_accepted_documents_go_to_the_topic_keyed_by_doc_id_as_the_raw_stage_reads_them(
    tmp_path: Path, kafka_broker: Broker
):
    topic = kafka_broker.create_topic("api-sink", with_dlq=False)
    keys = FileKeyStore(tmp_path / "keys.json")
    _, submitter = keys.create("producer", "submitter", channels=["api", "support"])
    env = {
        "NLP_DATA_DIR": str(tmp_path),
        "NLP_LANDING_DIR": str(tmp_path / "landing"),
        "NLP_LAKE_DIR": str(tmp_path / "lake"),
        "NLP_API_KEYS_FILE": str(tmp_path / "keys.json"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "NLP_API_KAFKA_TOPIC": topic,
        "DATABASE_URL": "",
        "REDIS_URL": "",
    }
    if kafka_broker.is_tansu:  # one message per batch on Tansu (see kafka_broker.py)
        env["KAFKA_EXTRA_CONFIG"] = '{"batch.num.messages": "1"}'
    with api_server(env, tmp_path / "api.log") as url:
        headers = {"Authorization": f"Bearer {submitter}"}
        ready = httpx.get(f"{url}/readyz", headers=headers, timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["kafka"] == "ok"
        response = httpx.post(
            f"{url}/v1/documents", json=[*DOCS, {"id": "bad"}], headers=headers, timeout=60
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert (body["accepted"], body["rejected"]) == (3, 1)
        accepted = body["results"][:3]
        assert {r["destination"] for r in accepted} == {f"kafka:{topic}"}
        ids = [r["doc_id"] for r in accepted]
        expected = [
            doc_id_for(f"api:{d.get('source', 'api')}", str(d["id"]), d["text"]) for d in DOCS
        ]
        assert ids == expected
        # nothing went to the landing folder
        assert not (tmp_path / "landing").exists() or not any((tmp_path / "landing").rglob("*"))

    messages = kafka_broker.read_all(topic)
    assert [m.key().decode() for m in messages] == ids  # each once, in order, keyed by doc_id
    for message, doc, doc_id in zip(messages, DOCS, ids, strict=True):
        # what the raw stage does with a message of this topic
        landed = validate_message(message.value(), topic=topic)
        row = normalise_record(landed, default_source=topic)
        assert doc_id_for(row["source"], row["source_id"], row["text"]) == doc_id
        assert row["text"] == doc["text"]
        assert row["source"] == f"api:{doc.get('source', 'api')}"  # the channel, namespaced
