"""A micro-batch run's fixed cost: from its process's start to its first model batch, with the
model server and without it (the models loaded by the run itself), in one run of this script.

Each run is a fresh Python process, as the daemon launches one per run: it imports the code
location, builds the resources and materialises tokens, features and predictions of 300 real
cleaned documents of one day (the result cache off, so the models compute). The child records
when the first `model batch` span opens (resources/model_cache.py) and when the run ends.
Rounds alternate server and no server. Run: `python -m bench.run_start [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

CHILD = """
import json, sys, time
t0 = float(sys.argv[1])
marks = {"python": time.time() - t0}
import dagster as dg
from nlp_assets import tracing
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.resources.model_cache import ModelCacheResource
marks["code_location"] = time.time() - t0
opened = tracing.span
def span(name, *args, **kwargs):
    if name == "model batch" and "first_model_batch" not in marks:
        marks["first_model_batch"] = time.time() - t0
    marks.setdefault("span " + name, time.time() - t0)
    return opened(name, *args, **kwargs)
tracing.span = span
resources = build_resources(lake_dir=sys.argv[2])
resources["model_cache"] = ModelCacheResource(enabled=False)
result = dg.materialize(all_assets, selection=["tokens", "features", "predictions"],
    partition_key=sys.argv[3], resources=resources, instance=dg.DagsterInstance.ephemeral())
assert result.success
marks["run_end"] = time.time() - t0
marks["imported_torch"] = float("torch" in sys.modules)
marks["imported_spacy"] = float("spacy" in sys.modules)
print("MARKS " + json.dumps(marks))
"""


def prepare(root: Path, day: str, n: int) -> None:
    """A lake with n real cleaned English documents of `day` and a sentiment head."""
    import numpy as np
    import polars as pl

    from nlp_assets import settings
    from nlp_assets.kernels.clean import clean_documents
    from nlp_assets.kernels.ingest import read_landing_day
    from nlp_assets.kernels.sentiment import SentimentHead
    from nlp_assets.lake import Lake
    from nlp_assets.resources.models import ModelResource

    raw = read_landing_day(Path(settings.landing_dir()), date.fromisoformat(day)).docs
    cleaned = clean_documents(raw, date.fromisoformat(day)).docs
    cleaned = cleaned.filter(pl.col("lang") == "en").head(n)
    lake = Lake(root)
    lake.write("cleaned_text", day, cleaned)
    models = ModelResource()
    embedder = models.local_registry().get(models.serve_name("embedding")).model
    head = SentimentHead(
        ("negative", "positive"),
        np.random.default_rng(0).normal(size=(1, embedder.dim)),
        np.zeros(1),
        embedder.name,
        embedder.version,
    )
    lake.write("sentiment_model", None, head.to_frame())


def child(lake: Path, day: str, env: dict[str, str]) -> dict[str, float]:
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, repr(started), str(lake), day],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    marks = [line for line in out.stdout.splitlines() if line.startswith("MARKS ")]
    if out.returncode or not marks:
        raise SystemExit(f"run failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(marks[-1][6:])


def main(argv: list[str] | None = None) -> int:
    from nlp_assets_tests import services

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--day", default="2026-11-17")
    args = parser.parse_args(argv)
    base = {k: v for k, v in os.environ.items() if not k.startswith("NLP_MODEL_SERVER")}
    runs: dict[str, list[dict[str, float]]] = {"server": [], "in-process": []}
    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp) / "lake"
        prepare(lake, args.day, args.docs)
        with services.model_server(Path(tmp)) as (url, _):
            for _ in range(args.rounds):
                runs["server"].append(child(lake, args.day, {**base, "NLP_MODEL_SERVER_URL": url}))
                runs["in-process"].append(child(lake, args.day, base))
    print(f"{args.docs} documents, tokens+features+predictions, {args.rounds} runs each (median s)")
    print(
        f"{'models':<11} {'python':>7} {'code loc':>9} {'1st model batch':>16} {'run end':>8} "
        "imports torch / spaCy"
    )
    for key, marks in runs.items():

        def med(name: str, marks: list[dict[str, float]] = marks) -> float:
            return statistics.median(m[name] for m in marks)

        print(
            f"{key:<11} {med('python'):7.2f} {med('code_location'):9.2f} "
            f"{med('first_model_batch'):16.2f} {med('run_end'):8.2f} "
            f"{med('imported_torch'):.0f} / {med('imported_spacy'):.0f}"
        )
    print(f"load average: {os.getloadavg()[0]:.2f}; cores: {len(os.sched_getaffinity(0))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
