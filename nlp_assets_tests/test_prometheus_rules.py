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

pytestmark = pytest.mark.metrics

DEPLOY = Path(__file__).parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "nlp_rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "nlp_rules_test.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
EXPECTED_ALERTS = {
    "NlpStageFailed",
    "NlpDeadLetterRateHigh",
    "NlpKafkaLagGrowing",
    "NlpKafkaRangeFailed",
    "NlpCacheHitRatioCollapsed",
    "NlpModelFallbackInUse",
    "NlpPartitionFreshnessMissed",
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
    assert used <= metrics.exported_metric_names() | recorded, used - recorded


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
