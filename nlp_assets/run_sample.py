"""`make run`: materialise the whole pipeline for every day in the landing folder, in-process,
on the Dagster instance under DAGSTER_HOME (SQLite by default), so the UI shows the runs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import dagster as dg

from nlp_assets import settings
from nlp_assets.definitions import defs
from nlp_assets.partitions import daily_partitions
from nlp_assets.sensors.landing import landed_days


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--day", action="append", help="only these days (YYYY-MM-DD)")
    args = parser.parse_args(argv)

    instance = dg.DagsterInstance.get()
    days = args.day or landed_days(Path(settings.landing_dir()))
    valid = set(daily_partitions.get_partition_keys())
    unknown = [d for d in days if d not in valid]
    if unknown:
        raise SystemExit(
            f"days outside the partitions ({settings.partitions_start()} on): {unknown}"
        )
    if not days:
        raise SystemExit(f"nothing landed under {settings.landing_dir()}: run `make data` first")

    started = time.perf_counter()
    _execute(defs.resolve_job_def("train_sentiment_model"), instance, None)
    pipeline = defs.resolve_job_def("daily_pipeline")
    for day in days:
        _execute(pipeline, instance, day)
    print(f"\nMaterialised {len(days)} day(s) in {time.perf_counter() - started:.0f} s.")
    for day in days:
        print(f"  report {day}: {settings.reports_dir()}/{day}/report.html")
    print("Open the UI on this instance: make dev  (then http://127.0.0.1:3000)")
    return 0


#: Step-by-step DEBUG events stay in the instance (the UI shows them); the terminal gets INFO.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _execute(job: dg.JobDefinition, instance: dg.DagsterInstance, day: str | None) -> None:
    label = day or "unpartitioned"
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance, partition_key=day, raise_on_error=False, run_config=QUIET
    )
    status = "ok" if result.success else "FAILED"
    print(
        f"{job.name} [{label}]: {status} in {time.perf_counter() - started:.1f} s "
        f"(run {result.run_id})",
        flush=True,
    )
    if not result.success:
        raise SystemExit(f"{job.name} failed for {label}; see the run in the UI (make dev)")


if __name__ == "__main__":
    raise SystemExit(main())
