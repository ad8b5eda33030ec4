"""The code location loads, and its assets have the properties every stage needs.

The graph itself (keys, deps, groups, owners, checks, jobs, schedules, sensors) is one snapshot:
test_definitions_snapshot.py.

Nothing here depends on where data lives: importing the definitions reads paths from the
environment but touches no file, and the one test about paths builds the resources afresh.
"""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import dagster as dg
import pytest

from nlp_assets import settings
from nlp_assets.definitions import build_resources, defs
from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.folders import DayFolder
from nlp_assets.resources.lake import LakeIOManager, LakeResource

STAGES = ["raw_text", "cleaned_text", "tokens", "features", "predictions", "aggregates", "reports"]
#: quality sits beside the chain: predictions and features -> quality -> reports
ASSETS = [
    *STAGES,
    "quality",
    "sentiment_model",
    "sentiment_finetuned",
    "sentiment_languages",
    "ner_evaluation",
]


@pytest.fixture(scope="module")
def graph():
    return defs.resolve_asset_graph()


def node(graph, name: str):
    return graph.get(dg.AssetKey(name))


def test_definitions_are_loadable() -> None:
    dg.Definitions.validate_loadable(defs)


def test_lineage_runs_from_raw_text_to_reports(graph) -> None:
    for upstream, downstream in pairwise(STAGES):
        assert dg.AssetKey(upstream) in node(graph, downstream).parent_keys


@pytest.mark.parametrize("name", STAGES)
def test_stages_are_daily_partitioned_in_utc_with_today_open(graph, name: str) -> None:
    partitions = node(graph, name).partitions_def
    assert isinstance(partitions, dg.DailyPartitionsDefinition)
    assert partitions == daily_partitions
    assert partitions.timezone == "UTC"
    assert partitions.end_offset == 1
    assert partitions.start.date().isoformat() == settings.partitions_start()


def test_sentiment_model_is_unpartitioned(graph) -> None:
    assert node(graph, "sentiment_model").partitions_def is None


@pytest.mark.parametrize("name", ASSETS)
def test_description_kinds_and_code_reference(graph, name: str) -> None:
    asset = node(graph, name)
    assert asset.description and len(asset.description) > 20
    assert asset.kinds
    references = asset.metadata["dagster/code_references"].code_references
    assert [Path(reference.file_path).name for reference in references] == [f"{name}.py"]


def test_resources_follow_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in ("NLP_LANDING_DIR", "NLP_LAKE_DIR", "NLP_REPORTS_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NLP_DATA_DIR", str(tmp_path))

    resources = build_resources()

    lake = resources["lake"]
    assert isinstance(lake, LakeResource)
    assert lake.root == str(tmp_path / "lake")
    io_manager = resources["lake_io_manager"]
    assert isinstance(io_manager, LakeIOManager)
    assert io_manager.lake.root == str(tmp_path / "lake")
    landing, reports = resources["landing"], resources["report_folder"]
    assert isinstance(landing, DayFolder) and isinstance(reports, DayFolder)
    assert landing.root == str(tmp_path / "landing")
    assert reports.root == str(tmp_path / "reports")
    assert not any(tmp_path.iterdir())  # building resources creates nothing


@pytest.mark.parametrize("name", ASSETS)
def test_transient_failures_are_retried(name: str) -> None:
    policy = defs.resolve_assets_def(name).op.retry_policy
    assert policy is not None and policy.max_retries >= 1


@pytest.mark.parametrize("name", ["features", "predictions"])
def test_model_steps_share_the_gpu_pool(name: str) -> None:
    assert defs.resolve_assets_def(name).op.pool == "gpu"


def test_served_model_steps_leave_the_gpu_pool_and_loading_imports_no_model_library() -> None:
    """The server owns the device and batches concurrent runs: their model steps may overlap
    (a code location loaded with NLP_MODEL_SERVER_URL set, as deployed). Every run process
    imports the code location first, so it loads no model or training library: scikit-learn
    alone was 0.9 s of each run's start."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from nlp_assets.definitions import defs; "
            "print(sorted({'torch', 'transformers', 'spacy', 'sklearn'} & set(sys.modules))); "
            "print([defs.resolve_assets_def(n).op.pool for n in ('features', 'predictions')])",
        ],
        env={**os.environ, "NLP_MODEL_SERVER_URL": "http://127.0.0.1:1", "NLP_DEVICE": "cuda"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-2:] == ["[]", "[None, None]"]


def test_dagster_cli_validates_the_workspace(tmp_path: Path) -> None:
    """What a user runs: `dagster definitions validate -w workspace.yaml`."""
    repo = Path(__file__).parents[1]
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "NLP_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            str(repo / "workspace.yaml"),
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr
