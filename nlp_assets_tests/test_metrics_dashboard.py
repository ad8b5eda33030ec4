"""The Grafana dashboard JSON: well-formed for Grafana's import, and every panel queries series
that the pipeline exports or the Prometheus rules record.

No Grafana server is available offline, so this validates the dashboard model's structure
(the keys and types Grafana's import needs) rather than loading it into Grafana.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from nlp_assets import metrics
from nlp_assets.resources.models import server

DEPLOY = Path(__file__).parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "nlp_pipeline_dashboard.json"
RULES = DEPLOY / "prometheus" / "nlp_rules.yml"
PANEL_TYPES = {"timeseries", "stat", "table", "gauge", "bargauge", "text", "row"}
GRID_COLUMNS = 24


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _recorded() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def test_dashboard_has_the_keys_grafana_import_needs() -> None:
    dashboard = _dashboard()
    for key, kind in {
        "uid": str,
        "title": str,
        "schemaVersion": int,
        "panels": list,
        "templating": dict,
        "time": dict,
    }.items():
        assert isinstance(dashboard.get(key), kind), key
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["schemaVersion"] >= 36
    assert {"from", "to"} <= set(dashboard["time"])
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert {"DS_PROMETHEUS", "asset", "partition"} <= set(names)
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]


def test_panels_are_well_formed_and_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    assert len(panels) >= 10
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["title"].strip()
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        covered = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_every_queried_series_is_exported_or_recorded() -> None:
    known = metrics.exported_metric_names() | server.metric_names() | _recorded()
    dashboard = _dashboard()
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {name for q in queries for name in re.findall(r"\b(nlp[_:][a-z0-9_:]+)", q)}
    assert used and used <= known, used - known
    # the series behind each alert are on the dashboard
    for series in ("nlp_stage_failed", "nlp:stage_cache_hit_ratio", "nlp_kafka_consumer_lag"):
        assert series in used, series
    assert {"nlp:raw_dlq_ratio", "nlp_stage_model_fallback"} <= used
    assert "nlp:stage_newest_partition_age_seconds" in used
    # and those of the model server's alerts
    assert {"nlp_model_server_ready", "nlp_model_server_queue_depth"} <= used
    assert "nlp_model_server_requests_total" in used
