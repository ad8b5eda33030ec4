"""Kubernetes' own checks of deploy/ (deploy/checks.py): every manifest and every object the
Helm values render validates against the Kubernetes schemas, checkov finds nothing that is
not suppressed with a reason, and the pods get what the code reads (Kafka, alert webhook) from
Secrets. Needs .venv-tools (`make setup`); no cluster, no network."""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

REPO = Path(__file__).parents[1]
DEPLOY = REPO / "deploy"
_spec = importlib.util.spec_from_file_location("deploy_checks", DEPLOY / "checks.py")
assert _spec and _spec.loader
checks = importlib.util.module_from_spec(_spec)
sys.modules["deploy_checks"] = checks
_spec.loader.exec_module(checks)

POD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet", "Pod"}


@pytest.fixture(scope="module")
def objects() -> list[Any]:
    return checks.all_objects()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return checks.scan(tmp_path_factory.mktemp("checkov"))


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    meta = obj["metadata"] if obj["kind"] == "Pod" else obj["spec"]["template"]["metadata"]
    return meta.get("labels") or {}


def by_name(objects: list[Any], source: str) -> dict[str, dict[str, Any]]:
    return {item.name: item.obj for item in objects if item.source == source}


# -- schemas ------------------------------------------------------------------------------------


def test_every_manifest_and_values_rendered_object_validates_against_kubernetes(objects) -> None:
    results = checks.validate(objects)
    assert {key: error for key, error in results.items() if error} == {}
    assert {version for _, _, version in results} == set(checks.KUBERNETES_VERSIONS)
    # every values set renders the code server, its Service, the run Job and a Job per pool
    for values_file in checks.values_files():
        rendered = set(by_name(objects, f"helm/{values_file}"))
        assert {
            "Deployment/dagster-nlp-assets", "Service/nlp-assets", "Job/dagster-run-00000000",
            "Job/dagster-step-default", "Job/dagster-step-gpu", "Job/dagster-step-spark",
        } <= rendered, values_file  # fmt: skip
    manifests = {item.name for item in objects if item.source.startswith("k8s/")}
    assert {"Deployment/nlp-api", "Ingress/nlp-api"} <= manifests
    assert "NetworkPolicy/dagster-user-code-only-from-webservers-and-daemon" in manifests


def test_schema_validation_catches_a_misspelt_field_and_a_wrong_type(objects) -> None:
    api = next(item for item in objects if item.name == "Deployment/nlp-api")
    misspelt = copy.deepcopy(api.obj)
    misspelt["spec"]["replica"] = misspelt["spec"].pop("replicas")
    wrong_type = copy.deepcopy(api.obj)
    pod_spec(wrong_type)["containers"][0]["ports"][0]["containerPort"] = "eighty"
    broken = [checks.Rendered("misspelt", misspelt), checks.Rendered("wrong type", wrong_type)]
    errors = list(checks.validate(broken, ("1.30.0",)).values())
    assert all(errors), errors
    assert "replica" in errors[0] and "containerPort" in errors[1]


# -- checkov ------------------------------------------------------------------------------------


def test_checkov_finds_no_unsuppressed_failure_in_deploy(report) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_abs_path']}): {c['check_name']}"
        for c in checks.findings(report, "failed_checks")
    ]
    assert failed == []
    scanned = {r["check_type"]: r["summary"]["resource_count"] for r in report["reports"]}
    assert scanned["dockerfile"] == 1  # deploy/Dockerfile
    # the manifests and the objects of every values set (not just a parse of the files)
    passed = {c["resource"] for c in checks.findings(report, "passed_checks")}
    for resource in (
        "Deployment.nlp.nlp-api", "Deployment.nlp.dagster-nlp-assets",
        "Job.nlp.dagster-run-00000000", "Job.nlp.dagster-step-gpu",
    ):  # fmt: skip
        assert resource in passed, resource


def test_checkov_flags_an_insecure_pod(tmp_path: Path) -> None:
    """The scan above can fail: a root pod without limits, probes or a read-only root."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "insecure", "namespace": "nlp"},
        "spec": {"containers": [{"name": "c", "image": "registry.example.com/x:1.0"}]},
    }
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod), encoding="utf-8")
    failed = {c["check_id"] for c in checks.findings(checks.checkov([tmp_path]), "failed_checks")}
    # read-only root, privilege escalation, root user, memory limits, liveness, readiness
    assert {"CKV_K8S_22", "CKV_K8S_20", "CKV_K8S_23", "CKV_K8S_13", "CKV_K8S_8", "CKV_K8S_9"} <= (
        failed
    )


#: An inline checkov suppression: a comment (Dockerfile, YAML) or a Kubernetes annotation.
SKIP_COMMENT = re.compile(r"checkov:skip=(CKV2?_\w+):(.*)$")
SKIP_ANNOTATION = re.compile(r"checkov\.io/skip\d*:\s*\"?(CKV2?_\w+)=([^\"]*)\"?\s*$")


def test_every_suppression_carries_a_reason(report) -> None:
    skipped = checks.findings(report, "skipped_checks")
    assert skipped, "no suppression at all: this test would prove nothing"
    for check in skipped:
        reason = (check["check_result"].get("suppress_comment") or "").strip()
        assert len(reason.split()) >= 5 and reason != "No comment provided", check["check_id"]
    # and in the files themselves (a skip that checkov did not need must be explained too)
    lines = [
        line.strip()
        for path in DEPLOY.rglob("*")
        if path.is_file() and path.suffix in {"", ".yaml", ".yml"}
        for line in path.read_text(encoding="utf-8").splitlines()
        if "checkov:skip" in line or "checkov.io/skip" in line
    ]
    assert len(lines) >= 10
    for line in lines:
        match = SKIP_COMMENT.search(line) or SKIP_ANNOTATION.search(line)
        assert match, f"not a checkov suppression with a reason: {line}"
        assert len(match.group(2).split()) >= 5, line


# -- what the pods get --------------------------------------------------------------------------


def _resolved_env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict:
    """The container's environment as the kubelet sets it, with `secrets` as the Secrets."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def _secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_kafka_and_alert_webhook_reach_code_server_run_and_step_pods_from_secrets(
    objects, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nlp_assets.kafka.resource import kafka_from_env
    from nlp_assets.sensors.alerts import ALERT_WEBHOOK_URL

    secrets = {
        "nlp-kafka": {"KAFKA_SASL_USERNAME": "pipeline", "KAFKA_SASL_PASSWORD": "s3cret"},
        "nlp-alerts": {ALERT_WEBHOOK_URL.env_var_name: "https://hooks.example.com/x"},
        "nlp-dagster-postgresql": {"postgresql-password": "pg"},
        "nlp-api": {"DATABASE_URL": "db", "REDIS_URL": "redis", "PROBE_KEY": "k"},
        "nlp-model-server": {"NLP_MODEL_SERVER_TOKEN": "t"},
    }
    pods = [  # the code location's pods (the telemetry stack in k8s/ runs none of our code)
        item for item in objects
        if item.obj["kind"] in POD_KINDS and item.source.startswith("helm/")
    ]  # fmt: skip
    assert len(pods) >= 6
    for item in [*pods, next(i for i in objects if i.name == "Deployment/nlp-api")]:
        (container,) = pod_spec(item.obj)["containers"]
        refs = _secret_refs(container)
        where = f"{item.source} {item.name}"
        assert refs["KAFKA_SASL_USERNAME"] == ("nlp-kafka", "KAFKA_SASL_USERNAME"), where
        assert refs["KAFKA_SASL_PASSWORD"] == ("nlp-kafka", "KAFKA_SASL_PASSWORD"), where
        if item.name != "Deployment/nlp-api":  # the alert sensor runs in the code server
            name = ALERT_WEBHOOK_URL.env_var_name
            assert refs[name] == ("nlp-alerts", name), where
        # what the code itself makes of that environment
        env = _resolved_env(container, secrets)
        for key in [k for k in os.environ if k.startswith("KAFKA_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        kafka = kafka_from_env()
        config = kafka.client_config()  # the values of the EnvVar fields
        assert config["bootstrap.servers"] == env["KAFKA_BOOTSTRAP_SERVERS"], where
        assert "localhost" not in config["bootstrap.servers"], where
        assert config["security.protocol"] == "SASL_SSL", where
        assert config["sasl.username"] == "pipeline", where
        assert isinstance(kafka.sasl_password, dg.EnvVar)
        assert config["sasl.password"] == "s3cret", where


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        present = expression["key"] in labels
        value = labels.get(expression["key"])
        ok = {
            "In": present and value in expression.get("values", []),
            "NotIn": not present or value not in expression.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[expression["operator"]]
        if not ok:
            return False
    return True


def test_every_pod_that_listens_has_a_network_policy(objects) -> None:
    policies = [item.obj for item in objects if item.obj["kind"] == "NetworkPolicy"]
    services = [item.obj for item in objects if item.obj["kind"] == "Service"]
    listening = [
        item for item in objects
        if item.obj["kind"] in POD_KINDS and (
            any(c.get("ports") for c in pod_spec(item.obj)["containers"])
            or any(_selects({"matchLabels": s["spec"]["selector"]}, pod_labels(item.obj))
                   for s in services)
        )
    ]  # fmt: skip
    assert {"Deployment/nlp-api", "Deployment/dagster-nlp-assets"} <= {i.name for i in listening}
    for item in listening:
        assert any(
            "Ingress" in p["spec"]["policyTypes"]
            and _selects(p["spec"]["podSelector"], pod_labels(item.obj))
            for p in policies
        ), f"{item.source} {item.name}"
    # the code server: only the webservers and the daemon, on the gRPC port
    (grpc,) = [p for p in policies if p["metadata"]["name"].startswith("dagster-user-code")]
    (rule,) = grpc["spec"]["ingress"]
    assert rule["ports"] == [{"port": 4000, "protocol": "TCP"}]
    webserver = {"component": "dagster-webserver"}
    assert _selects(rule["from"][0]["podSelector"], webserver)
    assert not _selects(rule["from"][0]["podSelector"], {"component": "step_worker"})


#: Pods that run as root, and why: the log agent reads the kubelet's pod log files (root-owned,
#: mode 0640) as their owner, with every capability dropped and read-only mounts.
ROOT_PODS = {"DaemonSet/otel-agent"}


def test_pods_are_non_root_read_only_limited_and_probed(objects) -> None:
    for item in [i for i in objects if i.obj["kind"] in POD_KINDS]:
        where = f"{item.source} {item.name}"
        spec = pod_spec(item.obj)
        if item.name in ROOT_PODS:
            assert spec["securityContext"]["runAsUser"] == 0, where
            (container,) = spec["containers"]
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in container["securityContext"]["capabilities"], where
            host = {v["name"] for v in spec["volumes"] if "hostPath" in v}
            assert host and all(
                m["readOnly"] for m in container["volumeMounts"] if m["name"] in host
            ), where
        else:
            assert spec["securityContext"]["runAsNonRoot"] is True, where
            assert spec["securityContext"]["runAsUser"] == 10001, where  # the images' user
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, where  # the only writable place besides /data
            if item.obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet"}:
                assert container["readinessProbe"] and container["livenessProbe"], where
        if item.name.startswith("Job/dagster-step"):
            assert spec["automountServiceAccountToken"] is False, where
    for values_file in checks.values_files():
        gpu = by_name(objects, f"helm/{values_file}")["Job/dagster-step-gpu"]
        (container,) = pod_spec(gpu)["containers"]
        assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1", values_file


def test_the_base_image_is_a_documented_build_argument() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    bases = re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)
    assert len(bases) == 2  # the `api` target and the code location
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for base in bases:
        arg = re.fullmatch(r"\$\{?(\w+)\}?", base)
        assert arg, f"FROM {base}: pin it with a build argument"
        assert re.search(rf"^ARG {arg.group(1)}=\S+", dockerfile, flags=re.M)
        assert f"--build-arg {arg.group(1)}=" in readme and "@sha256:" in readme


def test_webserver_and_daemon_values_are_non_root_with_resources() -> None:
    """The chart's own pods, which checks.py does not render: what our values give them."""
    values = checks.load_values([DEPLOY / "helm" / "values.yaml"])
    for section in ("dagsterWebserver", "dagsterDaemon"):
        given = values[section]
        assert given["podSecurityContext"]["runAsNonRoot"] is True, section
        assert given["securityContext"]["allowPrivilegeEscalation"] is False, section
        assert given["securityContext"]["capabilities"]["drop"] == ["ALL"], section
        assert {"cpu", "memory"} <= set(given["resources"]["requests"]), section
        assert "memory" in given["resources"]["limits"], section
