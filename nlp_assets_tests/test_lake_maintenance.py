"""The lake's maintenance jobs (`nlp_assets.lake.jobs`): compaction of a closed day, vacuum,
checkpoints, and the sensor that asks for compaction when a day closes. Each job runs for real
against Delta tables the pipeline's writer made; what a user checks: every row still there,
fewer files, superseded files gone, and the catalog told (asset observations)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from nlp_assets.definitions import defs
from nlp_assets.lake import Lake
from nlp_assets.lake.jobs import (
    COMPACT_JOB,
    closed_day,
    lake_compact_day_job,
    lake_compact_on_day_close,
    lake_vacuum_job,
)
from nlp_assets.resources.lake import LakeResource

DAY, OTHER = "2026-11-16", "2026-11-17"


def frame(prefix: str, day: str, rows: int = 30) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": [f"{prefix}{i:04d}" for i in range(rows)],
            "ingest_date": [date.fromisoformat(day)] * rows,
            "score": [float(i) for i in range(rows)],
        }
    )


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    """Two daily tables and a quarantine: ten micro-batch parts on DAY (one retried), one
    whole-day write on OTHER; plus an unpartitioned model table."""
    store = Lake(tmp_path / "lake")
    for asset in ("raw_text", "predictions"):
        for k in range(10):
            store.write(asset, DAY, frame(f"{asset[:1]}{k}-", DAY), f"kafka-t-p0-{k}")
        store.write(asset, DAY, frame(f"{asset[:1]}3-", DAY, rows=12), "kafka-t-p0-3")  # retry
        store.write(asset, OTHER, frame(f"{asset[:1]}o-", OTHER))
    store.write_quarantine("cleaned_text", DAY, frame("q-", DAY, rows=3), "kafka-t-p0-1")
    store.write("sentiment_model", None, pl.DataFrame({"weight": [0.5, 0.25]}))
    return store


def snapshot(store: Lake) -> dict[tuple[str, str], list[str]]:
    return {
        (table, day): sorted(store.read_day(table, day)["doc_id"])
        for table in ("raw_text", "predictions", "quarantine/cleaned_text")
        for day in (DAY, OTHER)
    }


def observations(result: dg.ExecuteInProcessResult) -> list[dg.AssetObservation]:
    return [
        event.event_specific_data.asset_observation  # type: ignore[union-attr]
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_OBSERVATION
    ]


def test_compacting_a_day_keeps_every_row_and_leaves_one_file_per_table(lake: Lake) -> None:
    before = snapshot(lake)
    assert len(lake.files("predictions", [DAY])) == 10
    result = lake_compact_day_job.execute_in_process(
        partition_key=DAY, resources={"lake": LakeResource(root=str(lake.root))}
    )
    assert result.success
    assert snapshot(lake) == before  # no row lost, none doubled
    assert before[("predictions", DAY)].count("p3-0000") == 1  # the retried part, once
    for table in ("raw_text", "predictions"):
        assert len(lake.files(table, [DAY])) == 1
        assert len(lake.files(table, [OTHER])) == 1  # another day is not touched
    seen = {(o.asset_key.to_user_string(), o.partition): o.metadata for o in observations(result)}
    assert seen[("predictions", DAY)]["files_before"].value == 10
    assert seen[("predictions", DAY)]["files_after"].value == 1
    assert ("cleaned_text", DAY) in seen  # a quarantine table reports on its stage's asset
    assert not any(key == "sentiment_model" for key, _ in seen)  # not a daily table


def test_vacuum_deletes_superseded_files_only_and_every_version_within_retention_reads(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake_compact_day_job.execute_in_process(
        partition_key=DAY, resources={"lake": LakeResource(root=str(lake.root))}
    )
    folder = Path(lake.table_uri("predictions")) / f"ingest_date={DAY}"
    on_disk = len(list(folder.glob("*.parquet")))
    assert on_disk == 12  # ten parts, the retried part's first file, the compacted file
    before = snapshot(lake)
    old_version = lake.version("predictions")

    monkeypatch.setenv("NLP_LAKE_VACUUM_RETENTION_HOURS", "1")
    kept = lake_vacuum_job.execute_in_process(resources={"lake": LakeResource(root=str(lake.root))})
    assert kept.success
    assert len(list(folder.glob("*.parquet"))) == 12  # younger than the retention: kept

    monkeypatch.setenv("NLP_LAKE_VACUUM_RETENTION_HOURS", "0")
    result = lake_vacuum_job.execute_in_process(
        resources={"lake": LakeResource(root=str(lake.root))}
    )
    assert result.success
    assert [p.name for p in folder.glob("*.parquet")] == [
        Path(f).name for f in lake.files("predictions", [DAY])
    ]  # only the live file is left
    assert snapshot(lake) == before
    assert lake.version("predictions") >= (old_version or 0)
    deleted = {
        o.asset_key.to_user_string(): o.metadata["files_deleted"].value
        for o in observations(result)
    }
    assert deleted["predictions"] == 11 and deleted["sentiment_model"] == 0


def test_a_run_of_a_closed_day_asks_for_its_compaction_once(tmp_path: Path) -> None:
    assert closed_day({"dagster/partition": DAY}, date(2026, 11, 17)) == DAY
    assert closed_day({"dagster/partition": OTHER}, date(2026, 11, 17)) is None  # still open
    assert closed_day({}, date(2026, 11, 17)) is None  # not a daily run

    @dg.asset(partitions_def=lake_compact_day_job.partitions_def)
    def anything() -> None:
        return None

    with dg.instance_for_test() as instance:
        run = dg.materialize([anything], partition_key=DAY, instance=instance)
        assert run.success
        event = next(
            e
            for e in instance.all_logs(run.run_id)
            if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_SUCCESS
        )
        context = dg.build_run_status_sensor_context(
            sensor_name=lake_compact_on_day_close.name,
            dagster_instance=instance,
            dagster_run=run.dagster_run,
            dagster_event=event.dagster_event,  # type: ignore[arg-type]
        )
        request = lake_compact_on_day_close(context)
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == DAY
    assert request.run_key == f"{COMPACT_JOB}:{DAY}:{run.run_id}"


def test_the_maintenance_jobs_schedule_and_sensor_are_in_the_code_location() -> None:
    assert defs.resolve_job_def("lake_compact_day").partitions_def is not None
    assert defs.resolve_job_def("lake_vacuum")
    schedule = defs.resolve_schedule_def("lake_vacuum_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert defs.resolve_sensor_def("lake_compact_on_day_close")


def test_vacuum_refuses_a_table_folder_that_still_holds_an_old_layout_day(lake: Lake) -> None:
    """A lake not yet migrated keeps its old day folders beside the new table: a full vacuum
    would delete them as files no version lists, so it refuses and names the way out."""
    old_day = Path(lake.table_uri("predictions")) / "2026-11-10"
    old_day.mkdir()
    frame("old-", "2026-11-10").write_parquet(old_day / "day.parquet")
    with pytest.raises(RuntimeError, match="nlp lake migrate"):
        lake.vacuum("predictions", 0)
    assert (old_day / "day.parquet").exists()
    assert lake.vacuum("raw_text", 0) is not None  # the other tables are vacuumed
