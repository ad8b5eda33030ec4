"""The result cache's three levels on a re-run: the five sample days materialised, Redis
flushed, the days re-run with L3 (Postgres) behind Redis, and again with L3 off (the baseline).

1. cold: raw_text to predictions of every landing day, every level empty (the model computes);
2. re-run with L3: this run's Redis keys deleted (what FLUSHDB or a Redis restart does to them;
   the shared Redis itself is not flushed), then tokens, features and predictions again;
3. re-run without L3: the Redis keys deleted again and the same steps with no L3 (all misses).

Prints, for each run, the hits by level, the misses, the model seconds (features and
predictions) and the wall time, and the model time L3 saved. Needs Redis (`REDIS_URL`, default
127.0.0.1:6379) and Postgres (`NLP_CACHE_DATABASE_URL`, default the local `postgres` database):
L3 goes to a schema of its own, dropped at the end. Run: `python -m bench.cache_levels`
(uses the sentiment head `make run` trained, or trains one first).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg

from nlp_assets import settings

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
COLD_STEPS = ("raw_text", "cleaned_text", "tokens", "features", "predictions")
RERUN_STEPS = ("tokens", "features", "predictions")
MODEL_STEPS = ("features", "predictions")
COUNTS = ("cache_hits_l1", "cache_hits_l2", "cache_hits_l3", "cache_misses", "cache_errors")


def run_days(
    days: list[str], steps: tuple[str, ...], resources: dict[str, Any]
) -> dict[str, float]:
    """Materialise `steps` for each day; the model steps' cache figures summed, and the wall."""
    from nlp_assets.definitions import all_assets

    totals: dict[str, float] = dict.fromkeys((*COUNTS, "cache_hits", "model_seconds"), 0.0)
    started = time.perf_counter()
    with dg.instance_for_test() as instance:
        for day in days:
            result = dg.materialize(
                all_assets,
                selection=list(steps),
                partition_key=day,
                instance=instance,
                resources=resources,
                run_config=QUIET,
            )
            if not result.success:
                raise RuntimeError(f"{day}: the run failed")
            for step in MODEL_STEPS:
                (materialization,) = result.asset_materializations_for_node(step)
                for key in totals:
                    value = materialization.metadata.get(key)
                    totals[key] += float(value.value) if value is not None else 0.0  # type: ignore[arg-type]
    totals["wall_s"] = time.perf_counter() - started
    return totals


def delete_keys(redis_url: str, namespace: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1_000))
    for start in range(0, len(keys), 1_000):
        client.delete(*keys[start : start + 1_000])
    client.close()
    return len(keys)


def drop_schema(database_url: str, schema: str) -> None:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", default="", help="comma-separated; default every landing day")
    args = parser.parse_args(argv)

    from bench.streaming import train_sentiment_head
    from nlp_assets.definitions import build_resources
    from nlp_assets.resources.model_cache import ModelCacheResource
    from nlp_assets.resources.models import ModelResource

    landing = Path(settings.landing_dir())
    days = args.days.split(",") if args.days else sorted(p.name for p in landing.iterdir())
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ.setdefault("NLP_CACHE_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url, database_url = os.environ["REDIS_URL"], os.environ["NLP_CACHE_DATABASE_URL"]
    run_id = uuid.uuid4().hex[:8]
    namespace, schema = f"bench-cache-{run_id}", f"bench_cache_{run_id}"
    models = ModelResource(device="cpu")
    models.embedder, models.entity_recognizer  # noqa: B018 - load before timing

    def resources(root: Path, l3: bool) -> dict[str, Any]:
        return {
            **build_resources(lake_dir=str(root / "lake"), landing_dir=str(landing)),
            "models": models,
            "model_cache": ModelCacheResource(
                namespace=namespace,
                database_schema=schema,
                database_url_env_var="NLP_CACHE_DATABASE_URL" if l3 else "",
            ),
        }

    runs: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
            root = Path(tmp)
            head = Path(settings.lake_dir()) / "sentiment_model"
            if not (head / "_delta_log").exists():
                head = train_sentiment_head(root / "trained")
            shutil.copytree(head, root / "lake" / "sentiment_model")
            runs["cold"] = run_days(days, COLD_STEPS, resources(root, l3=True))
            flushed = delete_keys(redis_url, namespace)
            runs["re-run, L3 on"] = run_days(days, RERUN_STEPS, resources(root, l3=True))
            delete_keys(redis_url, namespace)
            runs["re-run, L3 off"] = run_days(days, RERUN_STEPS, resources(root, l3=False))
    finally:
        delete_keys(redis_url, namespace)
        drop_schema(database_url, schema)

    print(
        f"\nresult cache levels: {len(days)} days ({', '.join(days)}), {os.cpu_count()} CPUs; "
        f"{flushed:,} Redis keys deleted before each re-run"
    )
    print(
        f"{'run':<16} {'results':>8} {'L1':>6} {'L2':>6} {'L3':>7} {'misses':>7} {'errors':>6} "
        f"{'hit rate':>8} {'model s':>8} {'wall s':>7}"
    )
    for name, r in runs.items():
        looked_up = r["cache_hits"] + r["cache_misses"]
        print(
            f"{name:<16} {looked_up:>8,.0f} {r['cache_hits_l1']:>6,.0f} "
            f"{r['cache_hits_l2']:>6,.0f} {r['cache_hits_l3']:>7,.0f} "
            f"{r['cache_misses']:>7,.0f} {r['cache_errors']:>6,.0f} "
            f"{r['cache_hits'] / max(looked_up, 1):>8.1%} {r['model_seconds']:>8.1f} "
            f"{r['wall_s']:>7.1f}"
        )
    cold, on, off = runs["cold"], runs["re-run, L3 on"], runs["re-run, L3 off"]
    print(
        f"model time saved by L3 on the re-run: {off['model_seconds'] - on['model_seconds']:.1f} s "
        f"of {off['model_seconds']:.1f} s; wall {off['wall_s']:.1f} s -> {on['wall_s']:.1f} s "
        f"({off['wall_s'] / max(on['wall_s'], 1e-9):.1f}x); cold run model time "
        f"{cold['model_seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
