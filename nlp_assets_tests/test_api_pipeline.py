"""A document submitted with `nlp submit` lands in today's landing folder, and once the pipeline
ran that day, `nlp status` shows its prediction (API on uvicorn, file key store, lake reads)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.kernels.ingest import doc_id_for
from nlp_assets.resources.models import ModelResource
from nlp_assets.stages.common import PIPELINE
from nlp_assets_tests.api_server import REPO, api_server

pytestmark = pytest.mark.api

NLP = str(Path(sys.executable).with_name("nlp"))


def _nlp(env: dict[str, str], *args: str, stdin: bytes | None = None):
    return subprocess.run(
        [NLP, "-q", *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **env},
        cwd=REPO,
        timeout=120,
    )


def test_cli_submit_then_pipeline_then_cli_status_shows_the_prediction(
    tmp_path: Path, models: ModelResource, trained_sentiment_head: Path
):
    today = datetime.now(UTC).date().isoformat()
    env = {
        "NLP_DATA_DIR": str(tmp_path),
        "NLP_LANDING_DIR": str(tmp_path / "landing"),
        "NLP_LAKE_DIR": str(tmp_path / "lake"),
        "NLP_REPORTS_DIR": str(tmp_path / "reports"),
        "HF_HUB_OFFLINE": "1",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        env[name] = ""  # the embedded default: file key store, landing folder, the lake
    created = _nlp(env, "keys", "create", "--name", "analyst", "--role", "submitter")
    assert created.returncode == 0, created.stderr
    token = created.stdout.decode().strip()
    assert token.startswith("nlp_") and "shown once" in created.stderr.decode()
    listed = _nlp(env, "keys", "list", "--json")
    assert token not in listed.stdout.decode()  # only the hash is stored
    stored = (tmp_path / "api" / "keys.json").read_text()
    assert token not in stored

    with api_server(env, tmp_path / "api.log") as url:
        client_env = {**env, "NLP_API_URL": url, "NLP_API_KEY": token}
        docs = [
            {"id": "cli-1", "text": "The hotel in Paris was wonderful and the staff kind."},
            {"id": "cli-2", "text": "Terrible food, cold and late. Never again."},
        ]
        stdin = b"".join(json.dumps(d).encode() + b"\n" for d in docs) + b'{"id": "bad"}\n'
        submitted = _nlp(client_env, "submit", "-", stdin=stdin)
        assert submitted.returncode == 5, submitted.stderr  # one line rejected
        assert "line 3: rejected: missing required field(s): text" in submitted.stderr.decode()
        receipts = [json.loads(line) for line in submitted.stdout.decode().splitlines()]
        expected = [doc_id_for("api:api", d["id"], d["text"]) for d in docs]
        assert [r["doc_id"] for r in receipts] == expected
        landed = sorted((tmp_path / "landing" / today / "api").glob("*.jsonl"))
        assert len(landed) == 1

        # accepted, not yet processed: the API's landing part is the record of it
        before = _nlp(client_env, "status", expected[0], "--json")
        assert before.returncode == 0, before.stderr
        pending = json.loads(before.stdout)
        assert pending["status"] == "accepted" and pending["day"] == today
        assert pending["destination"] == receipts[0]["destination"]
        assert pending["destination"] == f"landing:{today}/api/{landed[0].name}"
        assert pending["accepted_at"][:10] == today
        unknown = _nlp(client_env, "status", "ffffffffffffffff")
        assert unknown.returncode == 4 and "never submitted" in unknown.stderr.decode()

        # the real sentiment head, trained once per session, in this test's lake
        shutil.copytree(trained_sentiment_head, tmp_path / "lake" / "sentiment_model")
        resources = {
            **build_resources(
                lake_dir=env["NLP_LAKE_DIR"],
                landing_dir=env["NLP_LANDING_DIR"],
                reports_dir=env["NLP_REPORTS_DIR"],
            ),
            "models": models,
        }
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                all_assets,
                selection=PIPELINE,
                partition_key=today,
                instance=instance,
                resources=resources,
            )
            assert result.success

        shown = _nlp(client_env, "status", expected[0], "--json")
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)
        assert status["status"] == "processed" and status["day"] == today
        prediction = status["prediction"]
        assert prediction["sentiment_label"] in ("positive", "negative")
        assert 0 <= prediction["sentiment_score"] <= 1
        assert "Paris" in [e["text"] for e in prediction["entities"]]
        human = _nlp(client_env, "status", expected[1])
        assert human.returncode == 0 and "sentiment:" in human.stdout.decode()

        out = tmp_path / "day.parquet"
        read = _nlp(client_env, "read", today, "--format", "parquet", "-o", str(out))
        assert read.returncode == 0, read.stderr
        import polars as pl

        assert sorted(pl.read_parquet(out)["doc_id"].to_list()) == sorted(expected)

        # a submitter cannot launch backfills; a revoked key is refused
        denied = _nlp(client_env, "backfill", today, today)
        assert denied.returncode == 3 and "needs role 'operator'" in denied.stderr.decode()
        key_id = token.split("_")[1]
        assert _nlp(env, "keys", "revoke", key_id).returncode == 0
        assert _nlp(env, "keys", "revoke", "nosuchkey").returncode == 4
