"""deploy/'s trace and log path, offline: every pod of ours gets the collector's endpoint, a
service name of its own and JSON logs (their environment resolved as the kubelet resolves it,
then read by the OpenTelemetry SDK itself); the collector's pipelines are complete and reach
Tempo and Loki on the ports those listen on; the dashboard's trace link opens Tempo's search
for the row's asset and partition, and the data sources link traces and logs both ways.

No cluster, collector, Tempo, Loki or Grafana runs here: these check the files against each
other (deploy/checks.py and test_deploy_checks.py validate the objects and scan them)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import urllib.parse
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).parents[1]
DEPLOY = REPO / "deploy"
if "deploy_checks" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("deploy_checks", DEPLOY / "checks.py")
    assert _spec and _spec.loader
    sys.modules["deploy_checks"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["deploy_checks"])
checks = sys.modules["deploy_checks"]

COLLECTOR = "http://otel-collector:4317"
#: The service name each pod of ours reports, by rendered object.
SERVICE_NAMES = {
    "Deployment/nlp-api": "nlp-api",
    "Deployment/dagster-nlp-assets": "nlp-user-deployments",  # the code server
    "Job/dagster-run-00000000": "nlp-run_worker",
    "Job/dagster-step-default": "nlp-step_worker",
    "Job/dagster-step-gpu": "nlp-step_worker",
    "Job/dagster-step-models": "nlp-step_worker",
    "Job/dagster-step-spark": "nlp-step_worker",
}
_FIELD_LABEL = re.compile(r"metadata\.labels\['([^']+)'\]")


def manifests(name: str) -> dict[str, dict[str, Any]]:
    path = DEPLOY / "k8s" / name
    return {
        f"{d['kind']}/{d['metadata']['name']}": d
        for d in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if d
    }


def pod_of(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]


def kubelet_env(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """The container's plain and downward-API variables as the kubelet sets them: in order,
    `$(VAR)` expanded from those before, a label the pod lacks as "" (secrets left out)."""
    labels = pod["metadata"].get("labels") or {}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            value = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(item["value"])
            )
        elif "fieldRef" in item.get("valueFrom", {}):
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            label = _FIELD_LABEL.fullmatch(path)
            value = labels.get(label.group(1), "") if label else f"<{path}>"
        else:
            continue
        env[item["name"]] = value
    return env


@pytest.fixture(scope="module")
def our_pods() -> list[Any]:
    objects = checks.all_objects()
    pods = [item for item in objects if item.name in SERVICE_NAMES]
    # every values set renders each of the code location's pods, the API once
    assert len(pods) == 1 + (len(SERVICE_NAMES) - 1) * len(checks.values_files())
    return pods


def test_every_pod_of_ours_exports_to_the_collector_under_its_own_service_name(
    our_pods, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource

    for item in our_pods:
        where = f"{item.source} {item.name}"
        pod = pod_of(item.obj)
        (container,) = pod["spec"]["containers"]
        names = [e["name"] for e in container["env"]]
        assert len(names) == len(set(names)), f"{where}: a variable set twice"
        env = kubelet_env(pod, container)
        assert env["NLP_LOG_FORMAT"] == "json", where
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == COLLECTOR, where
        # what the SDK makes of that environment, as the process would
        for key in [k for k in os.environ if k.startswith("OTEL_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            if key.startswith("OTEL_"):
                monkeypatch.setenv(key, value)
        resource = Resource.create().attributes
        assert resource["service.name"] == SERVICE_NAMES[item.name], where
        assert resource["service.namespace"] == "nlp", where
        environment = re.search(r"values-(\w+)\.yaml", item.source)
        expected = environment.group(1) if environment else "dev"
        assert resource["deployment.environment"] == expected, where
        exporter = OTLPSpanExporter()  # endpoint and plain text from the environment alone
        assert exporter._endpoint == "otel-collector:4317" and exporter._insecure, where
        exporter.shutdown()


def test_daemon_values_set_the_collector_service_name_and_json_logs() -> None:
    values = checks.load_values([DEPLOY / "helm" / "values.yaml"])
    env = values["dagsterDaemon"]["env"]
    assert env == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR,
        "OTEL_SERVICE_NAME": "nlp-dagster-daemon",
        "NLP_LOG_FORMAT": "json",
    }


def _port(service: dict[str, Any], name: str) -> int:
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == name]
    return int(port["port"])


def _container_port(obj: dict[str, Any], name: str) -> int:
    (container,) = pod_of(obj)["spec"]["containers"]
    (port,) = [p for p in container["ports"] if p["name"] == name]
    return int(port["containerPort"])


def _config(objects: dict[str, Any], config_map: str, key: str) -> dict[str, Any]:
    return yaml.safe_load(objects[f"ConfigMap/{config_map}"]["data"][key])


def _host_port(endpoint: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(endpoint if "//" in endpoint else f"//{endpoint}")
    assert parsed.hostname and parsed.port, endpoint
    return parsed.hostname, parsed.port


def _check_pipelines(config: dict[str, Any]) -> None:
    service = config["service"]
    assert set(service["extensions"]) <= set(config["extensions"])
    for name, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            assert pipeline[kind] and set(pipeline[kind]) <= set(config[kind]), (name, kind)
        assert pipeline["processors"][0] == "memory_limiter", name
        assert "batch" in pipeline["processors"], name


def test_collector_sends_traces_to_tempo_and_logs_to_loki_on_the_ports_they_listen_on() -> None:
    collector, tempo, loki = (
        manifests(f) for f in ("otel-collector.yaml", "tempo.yaml", "loki.yaml")
    )
    gateway = _config(collector, "otel-collector", "gateway.yaml")
    _check_pipelines(gateway)
    pipelines = gateway["service"]["pipelines"]
    assert set(pipelines) == {"traces", "logs"}
    # our processes' endpoint is the gateway's Service, whose port its OTLP receiver listens on
    service = collector["Service/otel-collector"]
    host, port = _host_port(COLLECTOR)
    assert host == service["metadata"]["name"] and port == _port(service, "otlp-grpc")
    received = gateway["receivers"]["otlp"]["protocols"]
    assert _host_port(received["grpc"]["endpoint"])[1] == port
    assert _container_port(collector["Deployment/otel-collector"], "otlp-grpc") == port
    # traces -> Tempo's OTLP gRPC receiver
    (traces_out,) = pipelines["traces"]["exporters"]
    host, port = _host_port(gateway["exporters"][traces_out]["endpoint"])
    assert traces_out.startswith("otlp/") and host == "tempo"
    assert port == _port(tempo["Service/tempo"], "otlp-grpc")
    tempo_config = _config(tempo, "tempo", "tempo.yaml")
    grpc = tempo_config["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc == f"0.0.0.0:{port}"  # not Tempo's localhost default
    assert _container_port(tempo["StatefulSet/tempo"], "otlp-grpc") == port
    # logs -> Loki's OTLP endpoint, with structured metadata (trace_id) allowed
    (logs_out,) = pipelines["logs"]["exporters"]
    endpoint = gateway["exporters"][logs_out]["endpoint"]
    host, port = _host_port(endpoint)
    assert logs_out.startswith("otlphttp/") and host == "loki" and endpoint.endswith("/otlp")
    loki_config = _config(loki, "loki", "loki.yaml")
    assert port == _port(loki["Service/loki"], "http") == loki_config["server"]["http_listen_port"]
    assert loki_config["limits_config"]["allow_structured_metadata"] is True
    # the network policies let the collector in where it sends
    for name, backend in (("tempo", tempo), ("loki", loki)):
        (policy,) = [o for k, o in backend.items() if k.startswith("NetworkPolicy/")]
        sources = [s for rule in policy["spec"]["ingress"] for s in rule["from"]]
        assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "otel-collector"}}} in (
            sources
        ), name


def test_log_agent_reads_this_namespaces_json_lines_with_their_trace_ids() -> None:
    collector = manifests("otel-collector.yaml")
    agent = _config(collector, "otel-collector", "agent.yaml")
    _check_pipelines(agent)
    (exporter,) = agent["service"]["pipelines"]["logs"]["exporters"]
    assert _host_port(agent["exporters"][exporter]["endpoint"]) == _host_port(COLLECTOR)
    filelog = agent["receivers"]["filelog"]
    # ${env:K8S_NAMESPACE} is the agent's own namespace (downward API)
    (container,) = pod_of(collector["DaemonSet/otel-agent"])["spec"]["containers"]
    (namespace,) = [e for e in container["env"] if e["name"] == "K8S_NAMESPACE"]
    assert namespace["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"

    def read(path: str) -> bool:
        def glob(pattern: str) -> bool:
            return fnmatch(path, pattern.replace("${env:K8S_NAMESPACE}", "nlp"))

        return any(map(glob, filelog["include"])) and not any(map(glob, filelog["exclude"]))

    assert read("/var/log/pods/nlp_dagster-step-abc_0f1e/dagster/0.log")
    assert read("/var/log/pods/nlp_nlp-api-7d9c_1a2b/api/0.log")
    assert not read("/var/log/pods/nlp_otel-agent-x2x_3c4d/otel-agent/0.log")  # no loop
    assert not read("/var/log/pods/nlp-prod_nlp-api-7d9c_1a2b/api/0.log")  # its own namespace
    operators = {op["type"]: op for op in filelog["operators"]}
    assert list(operators)[:2] == ["container", "json_parser"]
    assert operators["json_parser"]["parse_to"] == "attributes"
    assert operators["trace_parser"]["trace_id"]["parse_from"] == "attributes.trace_id"
    assert operators["trace_parser"]["span_id"]["parse_from"] == "attributes.span_id"
    assert operators["severity_parser"]["parse_from"] == "attributes.level"


def test_telemetry_images_are_pinned_to_a_release() -> None:
    for name in ("otel-collector.yaml", "tempo.yaml", "loki.yaml"):
        for key, obj in manifests(name).items():
            if "template" not in obj.get("spec", {}):
                continue
            for container in pod_of(obj)["spec"]["containers"]:
                image = container["image"]
                assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+", image), f"{name} {key}: {image}"


def _datasources() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((DEPLOY / "grafana" / "datasources.yaml").read_text(encoding="utf-8"))
    return {source["type"]: source for source in config["datasources"]}


def test_dashboard_trace_link_opens_tempo_search_for_the_rows_asset_and_partition() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "nlp_pipeline_dashboard.json").read_text())
    (panel,) = [p for p in dashboard["panels"] if "traces" in p["title"].lower()]
    (target,) = panel["targets"]
    # one row per asset and partition, whose fields the link names
    assert target["format"] == "table" and target["instant"] is True
    assert "nlp_stage_duration_seconds" in target["expr"]
    by = re.search(r"by \(([^)]*)\)", target["expr"])
    assert by and {"asset", "partition"} <= {label.strip() for label in by.group(1).split(",")}
    (link,) = panel["fieldConfig"]["defaults"]["links"]
    # what Grafana sends when a row of tokens / 2024-05-01 is clicked
    url = (
        link["url"]
        .replace("${__data.fields.asset}", "tokens")
        .replace("${__data.fields.partition}", "2024-05-01")
        .replace("${__from}", "1714521600000")
        .replace("${__to}", "1714608000000")
    )
    assert "${" not in url
    parsed = urllib.parse.urlparse(url)
    assert parsed.path == "/explore"
    panes = json.loads(urllib.parse.parse_qs(parsed.query)["panes"][0])
    (pane,) = panes.values()
    (query,) = pane["queries"]
    tempo = _datasources()["tempo"]
    assert pane["datasource"] == query["datasource"]["uid"] == tempo["uid"]
    assert query["queryType"] == "traceql"
    assert query["query"] == '{ span.nlp.asset = "tokens" && span.nlp.partition = "2024-05-01" }'
    assert pane["range"] == {"from": "1714521600000", "to": "1714608000000"}


def test_data_sources_link_traces_to_logs_and_logs_to_traces() -> None:
    sources = _datasources()
    tempo, loki = sources["tempo"], sources["loki"]
    assert {"prometheus", "tempo", "loki"} <= set(sources)
    to_logs = tempo["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == loki["uid"] and to_logs["filterByTraceID"] is True
    (derived,) = loki["jsonData"]["derivedFields"]
    assert derived["datasourceUid"] == tempo["uid"]
    assert derived["matcherType"] == "label" and derived["matcherRegex"] == "trace_id"
    assert tempo["url"].startswith("http://tempo.") and tempo["url"].endswith(":3200")
    assert loki["url"].startswith("http://loki.") and loki["url"].endswith(":3100")
    # Grafana's provisioning expands $VAR and ${VAR}: Grafana's own ${__...} must be $${__...}
    text = (DEPLOY / "grafana" / "datasources.yaml").read_text(encoding="utf-8")
    assert not re.search(r"(?<!\$)\$\{__", text)
    assert not re.search(r"(?<!\$)\$__", text)
