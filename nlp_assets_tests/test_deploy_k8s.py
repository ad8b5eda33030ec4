"""What can be checked of deploy/ without a cluster: the YAML parses, the K8sRunLauncher and
k8s_job_executor config validate against dagster-k8s's own schema, the Helm values agree with
the production instance config, the proxies guard the right webservers, and the image's entry
commands load the definitions."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._config.field import resolve_to_config_type
from dagster_k8s import K8sRunLauncher, k8s_job_executor

from nlp_assets.definitions import all_assets, defs
from nlp_assets.executor import executor_from_env, k8s_executor_config, load_k8s_profile

REPO = Path(__file__).parents[1]
DEPLOY = REPO / "deploy"
OUR_YAML = [
    DEPLOY / "dagster.yaml",
    DEPLOY / "helm" / "values.yaml",
    DEPLOY / "k8s" / "executor.yaml",
    DEPLOY / "k8s" / "api.yaml",
    DEPLOY / "k8s" / "networkpolicy.yaml",
    DEPLOY / "k8s" / "otel-collector.yaml",
    DEPLOY / "k8s" / "tempo.yaml",
    DEPLOY / "k8s" / "loki.yaml",
    DEPLOY / "grafana" / "datasources.yaml",
    DEPLOY / "oauth2-proxy" / "values-editors.yaml",
    DEPLOY / "oauth2-proxy" / "values-viewers.yaml",
]
#: Top-level keys of the chart's values (helm/dagster/schema/.../values.py, plus concurrency).
CHART_KEYS = {
    "global", "dagsterWebserver", "dagster-user-deployments", "postgresql",
    "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
    "flower", "ingress", "imagePullSecrets", "computeLogManager", "scheduler", "runLauncher",
    "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry", "serviceAccount",
    "retention", "additionalInstanceConfig", "concurrency",
}  # fmt: skip
#: Our own top-level keys (the chart's schema allows extras): `api`, applied as deploy/k8s/api.yaml.
OUR_KEYS = {"api"}
#: How the chart's `dagsterYaml.runLauncher.k8s` template renders k8sRunLauncher values.
LAUNCHER_KEYS = {
    "loadInclusterConfig": "load_incluster_config",
    "kubeconfigFile": "kubeconfig_file",
    "jobNamespace": "job_namespace",
    "imagePullPolicy": "image_pull_policy",
    "envVars": "env_vars",
    "volumeMounts": "volume_mounts",
    "volumes": "volumes",
    "labels": "labels",
    "resources": "resources",
    "failPodOnRunFailure": "fail_pod_on_run_failure",
    "schedulerName": "scheduler_name",
    "securityContext": "security_context",
}
RUN_K8S_KEYS = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return load(DEPLOY / "helm" / "values.yaml")


def validate(schema, config: dict[str, Any]) -> None:
    result = process_config(resolve_to_config_type(schema), config)
    assert result.success, [error.message for error in result.errors]


@pytest.mark.parametrize("path", OUR_YAML, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses_to_mappings(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    assert documents and all(isinstance(d, dict) and d for d in documents)


def test_values_use_only_chart_keys_and_no_secret(values) -> None:
    assert set(values) <= CHART_KEYS | OUR_KEYS, set(values) - CHART_KEYS - OUR_KEYS
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlPassword"] == ""
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    text = (DEPLOY / "helm" / "values.yaml").read_text(encoding="utf-8")
    assert not re.search(r"://[^\s/:@]+:[^\s/@]+@", text), "a URL with a password in values"


def _launcher_config(values: dict[str, Any]) -> dict[str, Any]:
    """The run launcher config the chart renders from the values (chart template, subset)."""
    source = values["runLauncher"]["config"]["k8sRunLauncher"]
    known = {*LAUNCHER_KEYS, "envSecrets", "envConfigMaps", "runK8sConfig", "image"}
    assert set(source) <= known, f"keys the test cannot translate: {set(source) - known}"
    config: dict[str, Any] = {
        LAUNCHER_KEYS[key]: value for key, value in source.items() if key in LAUNCHER_KEYS
    }
    config.setdefault("job_namespace", "nlp")
    config |= {
        "service_account_name": values["global"]["serviceAccountName"],
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": "dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if source.get("envSecrets"):
        config["env_secrets"] = [s["name"] for s in source["envSecrets"]]
    if source.get("envConfigMaps"):
        config["env_config_maps"] = [c["name"] for c in source["envConfigMaps"]]
    if source.get("runK8sConfig"):
        assert set(source["runK8sConfig"]) <= set(RUN_K8S_KEYS)
        config["run_k8s_config"] = {
            RUN_K8S_KEYS[key]: value for key, value in source["runK8sConfig"].items()
        }
    return config


def test_run_launcher_config_validates_against_dagster_k8s(values) -> None:
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    config = _launcher_config(values)
    validate(K8sRunLauncher.config_type(), config)
    assert "nlp-warehouse" in config["env_secrets"]  # run pods get DATABASE_URL


def test_a_broken_run_launcher_config_is_caught(values) -> None:
    config = _launcher_config(values) | {"fail_pod_on_run_failure": "sometimes"}
    result = process_config(resolve_to_config_type(K8sRunLauncher.config_type()), config)
    assert not result.success  # the validation above can fail


def test_executor_config_validates_and_gives_gpu_steps_a_gpu() -> None:
    config = k8s_executor_config(all_assets, load_k8s_profile(DEPLOY / "k8s" / "executor.yaml"))
    validate(k8s_job_executor.config_schema.as_field().config_type, config)
    per_step = config["per_step_k8s_config"]
    pools = {
        a.op.name: a.op.pool for a in all_assets if isinstance(a, dg.AssetsDefinition) and a.op.pool
    }
    gpu_steps = {step for step, pool in pools.items() if pool == "gpu"}
    assert {"features", "predictions"} <= gpu_steps
    for step in gpu_steps:
        limits = per_step[step]["container_config"]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == 1, step
    assert "raw_text" not in per_step  # the default step pod


def test_spark_pool_steps_get_the_spark_driver_pod() -> None:
    @dg.asset(pool="spark")
    def big_join() -> None: ...

    @dg.asset
    def small() -> None: ...

    profile = load_k8s_profile(DEPLOY / "k8s" / "executor.yaml")
    config = k8s_executor_config([big_join, small, dg.AssetSpec("external")], profile)
    validate(k8s_job_executor.config_schema.as_field().config_type, config)
    assert config["per_step_k8s_config"] == {"big_join": profile["pools"]["spark"]}
    env = profile["pools"]["spark"]["container_config"]["env"]
    assert {"name": "SPARK_DRIVER_MEMORY", "value": "6g"} in env


def test_executor_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert executor_from_env(all_assets) is None  # default: Dagster's own executor
    monkeypatch.setenv("NLP_EXECUTOR", "k8s")
    monkeypatch.setenv("NLP_K8S_EXECUTOR_CONFIG", str(DEPLOY / "k8s" / "executor.yaml"))
    executor = executor_from_env(all_assets)
    assert executor is not None and executor.name == "k8s"
    dg.Definitions.validate_loadable(
        dg.Definitions(assets=all_assets, resources=defs.resources, executor=executor)
    )
    monkeypatch.setenv("NLP_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="use 'default' or 'k8s'"):
        executor_from_env(all_assets)


def test_helm_values_agree_with_the_instance_config(values) -> None:
    instance = load(DEPLOY / "dagster.yaml")
    runs, chart_runs = instance["concurrency"]["runs"], values["concurrency"]["runs"]
    assert chart_runs["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert chart_runs["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    backfill = next(t for t in runs["tag_concurrency_limits"] if t["key"] == "dagster/backfill")
    assert backfill["limit"] < runs["max_concurrent_runs"]  # sensor runs keep free slots
    assert (
        values["concurrency"]["pools"]["defaultLimit"]
        == instance["concurrency"]["pools"]["default_limit"]
    )
    retries = values["dagsterDaemon"]["runRetries"]
    assert retries == {
        "enabled": instance["run_retries"]["enabled"],
        "maxRetries": instance["run_retries"]["max_retries"],
        "retryOnAssetOrOpFailure": instance["run_retries"]["retry_on_asset_or_op_failure"],
    }
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    # The chart refuses limits set both here and on the run coordinator.
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert "maxConcurrentRuns" not in queued and "tagConcurrencyLimits" not in queued


def test_instance_credentials_come_from_the_environment_only() -> None:
    postgres = load(DEPLOY / "dagster.yaml")["storage"]["postgres"]["postgres_db"]
    assert postgres == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "db_name": {"env": "DAGSTER_PG_DB"},
        "username": {"env": "DAGSTER_PG_USERNAME"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
    }


def test_code_location_and_webservers(values) -> None:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "nlp_assets.definitions"]
    env = {e["name"]: e.get("value") for e in deployment["env"]}  # a list: secretKeyRef too
    assert env["NLP_EXECUTOR"] == "k8s"
    assert env["NLP_K8S_EXECUTOR_CONFIG"].endswith("deploy/k8s/executor.yaml")
    assert {s["name"] for s in deployment["envSecrets"]} >= {"nlp-warehouse", "nlp-redis"}
    assert values["dagsterWebserver"]["enableReadOnly"] is True


def test_editors_and_viewers_reach_their_own_webserver_through_oauth2_proxy() -> None:
    editors = load(DEPLOY / "oauth2-proxy" / "values-editors.yaml")
    viewers = load(DEPLOY / "oauth2-proxy" / "values-viewers.yaml")
    assert re.match(r"http://[\w-]+-webserver\.", editors["extraArgs"]["upstream"])
    assert re.match(r"http://[\w-]+-webserver-read-only\.", viewers["extraArgs"]["upstream"])
    assert editors["extraArgs"]["allowed-group"] == "nlp-pipeline-editors"
    viewer_groups = {e["name"]: e["value"] for e in viewers["extraEnv"]}
    assert set(viewer_groups["OAUTH2_PROXY_ALLOWED_GROUPS"].split(",")) == {
        "nlp-pipeline-viewers",
        "nlp-pipeline-editors",
    }
    for proxy in (editors, viewers):
        assert proxy["config"]["existingSecret"]  # client and cookie secrets stay out of Git
        assert "clientSecret" not in proxy["config"] and "cookieSecret" not in proxy["config"]

    policies = [
        p
        for p in yaml.safe_load_all((DEPLOY / "k8s" / "networkpolicy.yaml").read_text())
        if p["metadata"]["name"].startswith("dagster-webserver")
    ]
    guarded = {
        p["spec"]["podSelector"]["matchLabels"]["component"]: p["spec"]["ingress"][0]["from"][0][
            "podSelector"
        ]["matchLabels"]
        for p in policies
    }
    assert guarded == {
        "dagster-webserver": {"nlp-assets/proxy-for": editors["podLabels"]["nlp-assets/proxy-for"]},
        "dagster-webserver-read-only": {
            "nlp-assets/proxy-for": viewers["podLabels"]["nlp-assets/proxy-for"]
        },
    }


# -- the image ---------------------------------------------------------------------------------


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text(encoding="utf-8")


def test_every_path_the_dockerfile_copies_exists() -> None:
    for line in _dockerfile().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry_commands() -> dict[str, list[str]]:
    # the code location is the last stage (the default target); the first is the API's
    *_, cmd = re.findall(r"^CMD (\[.*\])$", _dockerfile(), flags=re.M)
    image_cmd = json.loads(cmd)
    (deployment,) = load(DEPLOY / "helm" / "values.yaml")["dagster-user-deployments"]["deployments"]
    chart_cmd = ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000"]
    return {"dockerfile": image_cmd, "helm": chart_cmd + deployment["dagsterApiGrpcArgs"]}


@pytest.mark.parametrize("which", ["dockerfile", "helm"])
def test_the_image_entry_command_serves_the_definitions(which: str, tmp_path: Path) -> None:
    from dagster._api.list_repositories import sync_list_repositories_grpc
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
    from dagster._grpc.client import DagsterGrpcClient

    command = _entry_commands()[which]
    port = _free_port()
    command = [
        {"0.0.0.0": "127.0.0.1", "4000": str(port)}.get(arg, arg) for arg in command
    ]  # listen on loopback, on a free port
    command[0] = str(Path(sys.executable).parent / command[0])
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "NLP_DATA_DIR": str(tmp_path / "data")}
    server = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read().decode(errors="replace")
            try:
                client.ping("up")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        sync_list_repositories_grpc(client)  # raises with the load error, if any
        origin = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=port, location_name="nlp")
        with dg.instance_for_test() as instance, origin.create_location(instance) as location:
            (repository,) = location.get_repositories().values()
            served = {n.asset_key for n in repository.get_asset_node_snaps()}
        assert served == set(defs.resolve_asset_graph().get_all_asset_keys())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_api_values_agree_with_the_api_manifest(values) -> None:
    api = values["api"]
    manifests = {
        d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s" / "api.yaml").read_text())
    }
    deployment = manifests["Deployment"]
    assert deployment["spec"]["replicas"] == api["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{api['image']['repository']}:{api['image']['tag']}"
    assert str(api["port"]) in container["command"]
    assert container["ports"][0]["containerPort"] == api["port"]
    plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert plain == api["env"]
    secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
    }
    from_secrets = {
        key: source["name"]
        for source in (api["envFromSecret"], api["kafkaSecret"], api["modelServerSecret"])
        for key in source["keys"]
    }  # fmt: skip
    assert {name: ref["name"] for name, ref in secret.items()} == from_secrets
    assert all(ref["key"] == name for name, ref in secret.items())
    # the lake's keys, as the code location's: the sentiment head /v1/predict applies is a table
    assert container["envFrom"] == [{"secretRef": {"name": api["lakeSecret"]["name"]}}]
    code_location = values["dagster-user-deployments"]["deployments"][0]
    assert {"name": api["lakeSecret"]["name"]} in [
        {"name": s["name"]} for s in code_location["envSecrets"]
    ]
    assert container["resources"] == api["resources"]
    probes = api["probes"]
    readiness = " ".join(container["readinessProbe"]["exec"]["command"])
    assert probes["readiness"]["path"] in readiness
    assert probes["readiness"]["credential"] in readiness
    assert container["readinessProbe"]["periodSeconds"] == probes["readiness"]["periodSeconds"]
    assert container["livenessProbe"]["httpGet"]["path"] == probes["liveness"]["path"]
    ingress = manifests["Ingress"]
    assert ingress["spec"]["tls"] == [
        {"hosts": [api["ingress"]["host"]], "secretName": api["ingress"]["tlsSecretName"]}
    ]
    body = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert body == api["ingress"]["maxBodySize"]
    assert manifests["NetworkPolicy"]["spec"]["podSelector"] == deployment["spec"]["selector"]
    text = (DEPLOY / "helm" / "values.yaml").read_text(encoding="utf-8")
    assert "nlp_" not in text.split("\napi:", 1)[1], "an API key in the values"


def _model_server_urls(node: Any) -> list[str]:
    """Every NLP_MODEL_SERVER_URL a manifest or values file sets (env lists and env maps)."""
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("name") == "NLP_MODEL_SERVER_URL" and "value" in node:
            found.append(node["value"])
        if isinstance(node.get("NLP_MODEL_SERVER_URL"), str):
            found.append(node["NLP_MODEL_SERVER_URL"])
        for child in node.values():
            found += _model_server_urls(child)
    elif isinstance(node, list):
        for child in node:
            found += _model_server_urls(child)
    return found


def test_each_environment_reaches_the_model_server_of_its_own_namespace() -> None:
    """The runs and the API of every environment (values.yaml, both overlays, api.yaml) call
    `http://<service>:<port>`, a name that resolves in their own namespace; the model server's
    manifest names no namespace, so `kubectl apply -n nlp-staging` gives staging its own
    server (with `namespace: nlp` in the file, staging had none)."""
    from urllib.parse import urlsplit

    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "model-server.yaml").read_text()) if d]
    assert [d["metadata"].get("namespace") for d in docs] == [None] * len(docs)
    (service,) = [
        d for d in docs if d["kind"] == "Service" and d["spec"].get("internalTrafficPolicy")
    ]
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    assert service["spec"]["selector"] == daemonset["spec"]["selector"]["matchLabels"]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    files = [
        DEPLOY / "helm" / "values.yaml",
        *sorted((DEPLOY / "helm").glob("values-*.yaml")),
        DEPLOY / "k8s" / "api.yaml",
    ]
    for path in files:
        urls = [u for doc in yaml.safe_load_all(path.read_text()) for u in _model_server_urls(doc)]
        assert urls, f"{path.name} sets no NLP_MODEL_SERVER_URL"
        for url in urls:
            parts = urlsplit(url)
            assert (parts.hostname, parts.port) == (service["metadata"]["name"], port["port"]), (
                f"{path.name}: {url} is not the model server Service of its own namespace"
            )
