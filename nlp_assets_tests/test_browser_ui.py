"""The Dagster UI in Debian's Chromium: lineage, a partition launched by clicking, the report.

The test starts `dagster dev` on a free port in its own process group (so it can stop all of
it) with a temporary DAGSTER_HOME and a landing folder of five short documents. The sentiment
head is trained first from the CLI (a subsample of the labelled set) since the run needs it.
Screenshots go to test-artifacts/browser/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from nlp_assets.kernels.pattern_corpora import PATTERN_CACHE_NAME
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import PIPELINE
from nlp_assets_tests.services import free_port, stop_process_group, wait_for_http

pytestmark = pytest.mark.browser

REPO = Path(__file__).parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
DAGSTER = str(Path(sys.executable).parent / "dagster")
#: What a user runs once before the first day (docs/pipeline.md): the head and the fr/nl models.
#: Without them, "Materialize all" first asks to confirm launching with an upstream never
#: materialised.
TRAIN = ["job", "execute", "-j", "train_sentiment_model"]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DAY = "2026-11-18"
STAGES = list(stage_names(PIPELINE))  # the pipeline's stages, in order
DOCS = [
    "The delivery was quick and the parcel intact, great service.",
    "Terrible support, nobody answered my e-mail for two weeks.",
    "The new phone from Apple works well in London.",
    "I would not buy this again, the battery died after a day.",
    "Lovely hotel near Paris with friendly staff.",
]
#: Rows per (domain, label) of the labelled set the head is trained on here: enough for a
#: working head, small enough to train in seconds.
TRAINING_ROWS_PER_CLASS = 150
#: Guards against a hung UI or run, not timings under test.
RUN_GUARD_S = 600
UI_GUARD_MS = 60_000


def _env(root: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PROMETHEUS_PUSHGATEWAY", "NLP_ALERT_WEBHOOK_URL", "DAGSTER_HOME"}
        and not k.startswith(("NLP_", "KAFKA_", "REDIS_", "DATABASE_"))
    }
    return env | {
        "DAGSTER_HOME": str(root / "home"),
        "NLP_DATA_DIR": str(root / "data"),
        "NLP_LABELLED_SENTIMENT": str(root / "labelled.parquet"),
        "NLP_METRICS_TEXTFILE_DIR": str(root / "metrics"),
        "HF_HUB_OFFLINE": "1",
        "NLP_DEVICE": "cpu",
    }


def _prepare(root: Path) -> dict[str, str]:
    """Instance folder, a tiny landing day, a trained sentiment head."""
    (root / "home").mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", root / "home" / "dagster.yaml")
    day = root / "data" / "landing" / DAY
    day.mkdir(parents=True)
    lines = [json.dumps({"id": f"d{i}", "source": "web", "text": t}) for i, t in enumerate(DOCS)]
    (day / "feedback.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    labelled = REPO / "data" / "labelled" / "sentiment.parquet"
    assert labelled.exists(), f"{labelled} is missing: run `make data` first"
    pl.read_parquet(labelled).filter(
        pl.int_range(pl.len()).over("domain", "label") < TRAINING_ROWS_PER_CLASS
    ).write_parquet(root / "labelled.parquet")
    # the multilingual heads train on the corpora `make data` extracted (read only here)
    corpora = REPO / "data" / "cache" / PATTERN_CACHE_NAME
    assert corpora.is_dir(), f"{corpora} is missing: run `make data` first"
    (root / "data" / "cache").mkdir(parents=True)
    (root / "data" / "cache" / PATTERN_CACHE_NAME).symlink_to(corpora)
    env = _env(root)
    trained = subprocess.run(
        [DAGSTER, *TRAIN, "-m", "nlp_assets.definitions"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_GUARD_S,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    return env


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("ui")
    env = _prepare(root)
    port = free_port()
    log = (root / "dagster-dev.log").open("wb")
    process = subprocess.Popen(
        [DAGSTER, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole below
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/server_info", process, timeout=180)
        yield {"url": f"http://127.0.0.1:{port}", "root": root, "home": root / "home"}
    finally:
        stop_process_group(process)
        log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "dagster-dev.log", ARTIFACTS / "dagster-dev.log")


@pytest.fixture(scope="module")
def page(dagster_ui):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing (.ci/run installs it)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_GUARD_MS)
        page.goto(dagster_ui["url"] + "/overview")
        # a fresh instance greets its first visitor with the community modal: dismiss it
        skip = page.get_by_role("button", name="Skip")
        skip.wait_for(state="visible")
        page.screenshot(path=ARTIFACTS / "00-community-modal.png")
        skip.click()
        skip.wait_for(state="detached")
        try:
            yield page
        finally:
            browser.close()


def _asset_names_in_graph(page) -> list[str]:
    return sorted(page.locator('[class*="AssetNode_assetName"]').all_inner_texts())


def test_lineage_shows_the_eight_stages_connected(dagster_ui, page) -> None:
    page.locator('a[href="/asset-groups"]').first.click()
    # every asset on a path from raw_text to reports: all eight exactly when they are connected
    query = page.locator('textarea[aria-label="Search and filter assets"]')
    query.focus()
    page.keyboard.type('key:"raw_text"+ and +key:"reports"')
    page.keyboard.press("Enter")
    # the graph's settings menu: show the assets inside their groups
    page.keyboard.press("Alt+e")
    page.locator('[class*="AssetNode_assetName"]').first.wait_for()
    page.wait_for_function(
        "() => document.querySelectorAll('[class*=\"AssetNode_assetName\"]').length >= 8"
    )
    page.screenshot(path=ARTIFACTS / "01-lineage.png")
    assert _asset_names_in_graph(page) == sorted(STAGES)


@pytest.fixture(scope="module")
def launched_run(dagster_ui, page) -> dict:
    """Launch DAY of daily_pipeline by clicking through the job page; follow it to its end."""
    page.locator('a[href="/jobs"]').first.click()
    page.locator('a[href$="/jobs/daily_pipeline"]').first.click()
    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog")
    partitions = dialog.get_by_placeholder("No matching partitions")
    partitions.fill(DAY)
    partitions.press("Enter")
    launch = dialog.get_by_role("button", name="Launch 1 run")
    page.screenshot(path=ARTIFACTS / "02-launch-dialog.png")
    launch.click()
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    toast.wait_for()
    short_id = re.search(r"Launched run ([0-9a-f]{8})", toast.inner_text()).group(1)
    # follow it from the Runs page, like a user would
    page.locator('a[href="/runs"]').first.click()
    page.locator(f'a[href^="/runs/{short_id}"]').first.click()
    page.wait_for_url(f"**/runs/{short_id}*")
    run_id = page.url.split("/runs/", 1)[1].split("?")[0].strip("/")
    # the run page updates live; wait for the run's end (a guard, not a timing under test)
    page.get_by_text("Success", exact=True).or_(
        page.get_by_text("Failure", exact=True)
    ).first.wait_for(timeout=RUN_GUARD_S * 1000)
    page.screenshot(path=ARTIFACTS / "03-run.png", full_page=True)
    with dg.DagsterInstance.from_config(str(dagster_ui["home"])) as instance:
        run = instance.get_run_by_id(run_id)
        deadline = time.monotonic() + RUN_GUARD_S
        while run is not None and not run.is_finished and time.monotonic() < deadline:
            time.sleep(2)  # the page said so; the run's final event may still be landing
            run = instance.get_run_by_id(run_id)
        materialised = [
            record.asset_key.to_user_string()
            for stage in STAGES
            for record in instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage), asset_partitions=[DAY]),
                limit=10,
            ).records
        ]
        return {"run_id": run_id, "run": run, "materialised": materialised}


def test_a_partition_launched_from_the_ui_completes(launched_run) -> None:
    run = launched_run["run"]
    assert run is not None, f"run {launched_run['run_id']} is not in the instance"
    assert run.job_name == "daily_pipeline"
    assert run.tags.get("dagster/partition") == DAY
    assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
    assert sorted(launched_run["materialised"]) == sorted(STAGES)  # each stage once


def test_report_page_shows_its_chart_preview(dagster_ui, page, launched_run) -> None:
    page.goto(dagster_ui["url"] + "/assets/reports")
    # the latest materialisation's metadata: the markdown preview opens in a dialog
    row = page.locator("tr").filter(has_text="report_preview")
    row.get_by_text("Show Markdown").click()
    chart = page.get_by_role("dialog").locator('img[src^="data:image/png;base64,"]').first
    chart.wait_for()
    chart.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "04-report-asset.png", full_page=True)
    width = chart.evaluate("img => img.complete ? img.naturalWidth : 0")
    assert width > 100, "the chart preview did not render"
    assert f"NLP report {DAY}" in page.get_by_role("dialog").inner_text()
    page.get_by_role("dialog").get_by_role("button", name="Close").click()
    page.get_by_role("dialog").wait_for(state="detached")


def test_automation_page_lists_the_sensors_and_schedules(dagster_ui, page) -> None:
    page.goto(dagster_ui["url"] + "/overview")  # whatever an earlier test left open
    page.locator('a[href="/automation"]').first.click()
    for name in (
        "run_failure_alert_sensor",
        "landing_folder_sensor",
        "daily_pipeline_schedule",
        "daily_reports_schedule",
        "freshness_checks_schedule",
    ):
        page.get_by_text(name, exact=True).first.wait_for()
    page.screenshot(path=ARTIFACTS / "05-automation.png", full_page=True)
    # a sensor's page shows its description
    page.get_by_text("run_failure_alert_sensor", exact=True).first.click()
    page.get_by_text("NLP_ALERT_WEBHOOK_URL", exact=False).first.wait_for()
    page.screenshot(path=ARTIFACTS / "06-alert-sensor.png", full_page=True)
