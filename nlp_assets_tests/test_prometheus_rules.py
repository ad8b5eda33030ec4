"""The deploy/ monitoring files, checked by the real Prometheus and Alertmanager tools.

promtool and amtool are Debian packages that `.ci/run` installs: a missing tool fails these
tests, it never skips them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from nlp_assets import metrics
from nlp_assets.resources.models import server

pytestmark = pytest.mark.metrics

DEPLOY = Path(__file__).parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "nlp_rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "nlp_rules_test.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
MODEL_SERVER = DEPLOY / "k8s" / "model-server.yaml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
EXPECTED_ALERTS = {
    "NlpStageFailed",
    "NlpDeadLetterRateHigh",
    "NlpKafkaLagGrowing",
    "NlpKafkaRangeFailed",
    "NlpCacheHitRatioCollapsed",
    "NlpModelFallbackInUse",
    "NlpPartitionFreshnessMissed",
    "NlpModelServerDown",
    "NlpModelServerQueueBacklog",
    "NlpModelServerErrors",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not on PATH: install Debian's prometheus / prometheus-alertmanager"
    return path


def _run(*args: str, stdout_only: bool = False) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return done.stdout if stdout_only else output


def _rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def test_promtool_accepts_the_rules() -> None:
    output = _run(_tool("promtool"), "check", "rules", str(RULES))
    assert f"SUCCESS: {len(_rules())} rules found" in output


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    output = _run(_tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in output


def test_every_alert_has_a_severity_and_a_unit_test() -> None:
    alerts = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
    assert set(alerts) == EXPECTED_ALERTS
    assert all(rule["labels"]["severity"] in {"warning", "critical"} for rule in alerts.values())
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == EXPECTED_ALERTS  # each alert is seen firing in a unit test


def test_rules_only_use_series_the_pipeline_exports() -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    used = set()
    for rule in _rules():
        used |= set(re.findall(r"\b(nlp[_:][a-z0-9_:]+)", rule["expr"]))
    known = metrics.exported_metric_names() | server.metric_names() | recorded
    assert used <= known, used - known


def test_promtool_accepts_the_prometheus_config_with_its_rules() -> None:
    output = _run(_tool("promtool"), "check", "config", str(PROMETHEUS))
    assert "SUCCESS: 1 rule files found" in output


def test_prometheus_scrapes_every_model_server_pod_of_each_environment_under_the_alerts_job() -> (
    None
):
    """The alerts read `up` of the job `nlp-model-server`; that job discovers the pods through
    the headless Service of deploy/k8s/model-server.yaml (not-ready pods included, so a server
    that never gets warm is seen), in each namespace a Helm overlay deploys to."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "nlp-model-server"]
    down = next(r for r in _rules() if r.get("alert") == "NlpModelServerDown")
    assert 'up{job="nlp-model-server"}' in down["expr"]
    services = {
        doc["metadata"]["name"]: doc
        for doc in yaml.safe_load_all(MODEL_SERVER.read_text())
        if doc and doc["kind"] == "Service"
    }
    (names,) = [sd["names"] for sd in job["dns_sd_configs"]]
    headless = {name.split(".")[0] for name in names}
    assert len(headless) == 1
    pods = services[headless.pop()]["spec"]
    assert pods["clusterIP"] == "None" and pods["publishNotReadyAddresses"] is True
    port = job["dns_sd_configs"][0]["port"]
    assert [p["port"] for p in pods["ports"]] == [port]
    namespaces = {name.split(".")[1] for name in names}
    overlays = sorted((DEPLOY / "helm").glob("values-*.yaml"))
    deployed = {
        re.search(r"-n (nlp[a-z-]*)", path.read_text()).group(1)  # type: ignore[union-attr]
        for path in overlays
    }
    assert namespaces == deployed, (namespaces, deployed)


def test_amtool_accepts_the_alertmanager_config() -> None:
    output = _run(_tool("amtool"), "check-config", str(ALERTMANAGER))
    assert "SUCCESS" in output and "2 receivers" in output


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["severity=warning", "alertname=NlpModelFallbackInUse"], "team-channel"),
        # critical: the team channel at once, and escalated to on-call (after group_wait)
        (["severity=critical", "alertname=NlpStageFailed"], "team-channel,on-call"),
        (["alertname=Unlabelled"], "team-channel"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receivers: str) -> None:
    output = _run(
        _tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        *labels,
        stdout_only=True,
    )
    assert output.strip() == receivers


def test_escalation_to_on_call_waits_and_repeats() -> None:
    routes = yaml.safe_load(ALERTMANAGER.read_text())["route"]["routes"]
    [on_call] = [route for route in routes if route["receiver"] == "on-call"]
    assert on_call["group_wait"] == "10m" and on_call["repeat_interval"] == "1h"
    [team_critical] = [r for r in routes if r["receiver"] == "team-channel" and r.get("continue")]
    assert team_critical["matchers"] == on_call["matchers"] == ['severity="critical"']
