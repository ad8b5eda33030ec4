"""Kubernetes' own checks for deploy/, offline: render every object, validate it against the
Kubernetes JSON schemas (kubernetes-validate) and scan it with checkov.

    .venv/bin/python deploy/checks.py [--out DIR]

Objects checked (deploy/README.md "Checks" says what is and is not covered):

- the manifests in deploy/k8s/ (api.yaml, networkpolicy.yaml, otel-collector.yaml, tempo.yaml,
  loki.yaml), as they are;
- per Helm values file (helm/values.yaml, and each helm/values-<env>.yaml overlay layered on
  it as `helm -f values.yaml -f values-<env>.yaml` would): the code location's Deployment and
  Service, rebuilt from the values the way the Dagster chart's dagster-user-deployments
  template builds them (the chart itself is not shipped by any registry reachable here); the
  run worker's Job and each step pool's Job, built by dagster-k8s's own
  `construct_dagster_k8s_job` from the run launcher values, the code location's container
  context and deploy/k8s/executor.yaml, as the K8sRunLauncher and k8s_job_executor build them.

kubernetes-validate and checkov live in .venv-tools (`make setup`): their pins clash with ours.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
#: Where checkov and kubernetes-validate are (`make setup` makes .venv-tools).
TOOLS_BIN = Path(os.getenv("NLP_DEPLOY_TOOLS_BIN", REPO / ".venv-tools" / "bin"))
#: Kubernetes versions the objects must validate against: the oldest we support and the
#: newest kubernetes-validate ships (strict: unknown fields are errors).
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
RELEASE = "dagster"  # helm release name (docs/production.md)
NAMESPACE = "nlp"
CHART = "dagster"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
#: Not Kubernetes objects: k8s_job_executor config (rendered into step Jobs below).
NOT_MANIFESTS = {DEPLOY / "k8s" / "executor.yaml"}
#: Frameworks checkov scans here (its helm framework needs a helm binary: we render instead).
CHECKOV_FRAMEWORKS = ("kubernetes", "dockerfile", "secrets")


@dataclass(frozen=True)
class Rendered:
    """One Kubernetes object and where it came from."""

    source: str  # e.g. "k8s/api.yaml" or "helm/values.yaml: run worker Job"
    obj: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.obj['kind']}/{self.obj['metadata']['name']}"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def values_files() -> dict[str, list[Path]]:
    """Each Helm values set: values.yaml alone and with each values-<env>.yaml overlay."""
    base = DEPLOY / "helm" / "values.yaml"
    sets = {"values.yaml": [base]}
    for overlay in sorted((DEPLOY / "helm").glob("values-*.yaml")):
        sets[overlay.name] = [base, overlay]
    return sets


def merge_values(base: Any, overlay: Any) -> Any:
    """Helm's merge of values files: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = merge_values(base[key], value) if key in base else value
        return merged
    return copy.deepcopy(overlay)


def load_values(paths: list[Path]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in paths:
        values = merge_values(values, load_yaml(path) or {})
    return values


# -- the code location (the chart's dagster-user-deployments subchart) --------------------------


def _fullname() -> str:
    return RELEASE if CHART in RELEASE else f"{RELEASE}-{CHART}"


def _user_image(deployment: dict[str, Any]) -> str:
    image = deployment["image"]
    return f"{image['repository']}:{image['tag']}"


def _user_env(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    env = deployment.get("env") or []
    if isinstance(env, dict):  # the chart writes a map to a ConfigMap instead
        return []
    return list(env)


def container_context(values: dict[str, Any], deployment: dict[str, Any]) -> dict[str, Any]:
    """The `k8s` container context the chart hands `dagster api grpc` (runs inherit it)."""
    context: dict[str, Any] = {
        "image_pull_policy": deployment["image"].get("pullPolicy"),
        "env_config_maps": [
            f"{_fullname()}-{deployment['name']}-user-env",
            *(c["name"] for c in deployment.get("envConfigMaps", []) if "name" in c),
        ],
        "namespace": NAMESPACE,
        "service_account_name": values.get("global", {}).get("serviceAccountName")
        or f"{_fullname()}-user-deployments",
    }
    secrets = [s["name"] for s in deployment.get("envSecrets", []) if "name" in s]
    if secrets:
        context["env_secrets"] = secrets
    for key, target in (
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("schedulerName", "scheduler_name"),
    ):
        if deployment.get(key):
            context[target] = deployment[key]
    if _user_env(deployment):
        context["env"] = _user_env(deployment)
    return {"k8s": context}


def user_code_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Deployment and Service per code location, as the chart's templates lay them out."""
    section = values.get("dagster-user-deployments", {})
    if not section.get("enabled", True):
        return []
    objects = []
    selector = {"app.kubernetes.io/name": CHART, "app.kubernetes.io/instance": RELEASE}
    for deployment in section.get("deployments", []):
        name = f"{_fullname()}-{deployment['name']}"
        labels = {**selector, "component": "user-deployments", "deployment": deployment["name"]}
        port = deployment["port"]
        args = ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(port)]
        args += deployment.get("dagsterApiGrpcArgs", [])
        health = {"exec": {"command": ["dagster", "api", "grpc-health-check", "-p", str(port)]}}
        container: dict[str, Any] = {
            "name": CHART,
            "securityContext": deployment.get("securityContext", {}),
            "imagePullPolicy": deployment["image"].get("pullPolicy"),
            "image": _user_image(deployment),
            "args": args,
            "env": [
                {"name": "DAGSTER_CURRENT_IMAGE", "value": _user_image(deployment)},
                {
                    "name": "DAGSTER_PG_PASSWORD",
                    "valueFrom": {
                        "secretKeyRef": {
                            "name": values["global"]["postgresqlSecretName"],
                            "key": "postgresql-password",
                        }
                    },
                },
                {
                    "name": "DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT",
                    "value": json.dumps(container_context(values, deployment)),
                },
                *_user_env(deployment),
            ],
            "envFrom": [
                {"configMapRef": {"name": f"{_fullname()}-user-deployments-shared-env"}},
                {"configMapRef": {"name": f"{name}-user-env"}},
                *({"configMapRef": c} for c in deployment.get("envConfigMaps", [])),
                *({"secretRef": s} for s in deployment.get("envSecrets", [])),
            ],
            "resources": deployment.get("resources", {}),
        }
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            given = deployment.get(probe)
            if probe == "readinessProbe" and not given:  # the chart's default
                given = {"periodSeconds": 20, "timeoutSeconds": 10, "failureThreshold": 15}
            if given and given.get("enabled", True):
                spec = {k: v for k, v in given.items() if k != "enabled"}
                container[probe] = spec if "exec" in spec else {**health, **spec}
        if deployment.get("volumeMounts"):
            container["volumeMounts"] = deployment["volumeMounts"]
        pod_spec: dict[str, Any] = {
            "imagePullSecrets": values.get("imagePullSecrets", []),
            "serviceAccountName": container_context(values, deployment)["k8s"][
                "service_account_name"
            ],
            "automountServiceAccountToken": True,  # hard-coded in the chart's template
            "securityContext": deployment.get("podSecurityContext", {}),
            "containers": [container],
            "nodeSelector": deployment.get("nodeSelector", {}),
            "tolerations": deployment.get("tolerations", []),
        }
        if deployment.get("volumes"):
            pod_spec["volumes"] = deployment["volumes"]
        annotations = deployment.get("annotations") or {}
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "labels": labels,
                    "annotations": annotations,
                },
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels, "annotations": annotations},
                        "spec": pod_spec,
                    },
                },
            }
        )
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": deployment["name"], "namespace": NAMESPACE, "labels": labels},
                "spec": {
                    "type": "ClusterIP",
                    "ports": [
                        {"port": port, "protocol": "TCP", "name": "grpc", "targetPort": port}
                    ],
                    "selector": labels,
                },
            }
        )
    return objects


# -- run and step Jobs, built by dagster-k8s itself ---------------------------------------------

_LAUNCHER_KEYS = {
    "imagePullPolicy": "image_pull_policy",
    "envConfigMaps": "env_config_maps",
    "envSecrets": "env_secrets",
    "envVars": "env_vars",
    "volumeMounts": "volume_mounts",
    "volumes": "volumes",
    "labels": "labels",
    "resources": "resources",
    "schedulerName": "scheduler_name",
    "securityContext": "security_context",
}
_RUN_K8S_KEYS = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}


def _launcher_context(values: dict[str, Any]):
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    source = values["runLauncher"]["config"]["k8sRunLauncher"]
    fields: dict[str, Any] = {}
    for key, target in _LAUNCHER_KEYS.items():
        if source.get(key):
            value = source[key]
            if key in ("envConfigMaps", "envSecrets"):
                value = [item["name"] for item in value]
            fields[target] = value
    fields["env_config_maps"] = [f"{_fullname()}-pipeline-env", *fields.get("env_config_maps", [])]
    run_k8s = {_RUN_K8S_KEYS[k]: v for k, v in (source.get("runK8sConfig") or {}).items()}
    return K8sContainerContext(
        service_account_name=values["global"]["serviceAccountName"],
        namespace=NAMESPACE,
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(run_k8s),
        **fields,
    )


def _job_config(values: dict[str, Any], image: str):
    from dagster_k8s.job import DagsterK8sJobConfig

    return DagsterK8sJobConfig(
        job_image=image,
        dagster_home=values["global"]["dagsterHome"],
        image_pull_policy=values["runLauncher"]["config"]["k8sRunLauncher"].get("imagePullPolicy"),
        instance_config_map=f"{_fullname()}-instance",
        postgres_password_secret=values["global"]["postgresqlSecretName"],
    )


def _to_dict(job: Any) -> dict[str, Any]:
    from kubernetes.client import ApiClient

    obj = ApiClient().sanitize_for_serialization(job)
    obj["metadata"]["namespace"] = NAMESPACE
    return obj


def job_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The run worker's Job and one step Job per executor pool (plus the default step pod)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    if values.get("runLauncher", {}).get("type") != "K8sRunLauncher":
        return []
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    image = _user_image(deployment)
    run_context = _launcher_context(values)
    if (deployment.get("includeConfigInLaunchedRuns") or {"enabled": True}).get("enabled"):
        location = K8sContainerContext.create_from_config(container_context(values, deployment))
        run_context = run_context.merge(location)
    job_config = _job_config(values, image)
    labels = {"dagster/job": "__ASSET_JOB", "dagster/run-id": "0" * 8}
    jobs = [
        construct_dagster_k8s_job(
            job_config=job_config,
            args=["dagster", "api", "execute_run", "{}"],
            job_name="dagster-run-00000000",
            pod_name="dagster-run-00000000",
            component="run_worker",
            user_defined_k8s_config=run_context.run_k8s_config,
            labels=labels,
            env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": "__ASSET_JOB"}],
        )
    ]
    profile = load_yaml(DEPLOY / "k8s" / "executor.yaml")
    executor = profile["executor"]
    step_context = run_context.merge(
        K8sContainerContext(
            run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
                executor.get("step_k8s_config", {})
            )
        )
    )
    pools = {"default": {}, **profile.get("pools", {})}
    for pool, per_op in pools.items():
        context = step_context.merge(
            K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(per_op))
        )
        name = f"dagster-step-{pool}"
        jobs.append(
            construct_dagster_k8s_job(
                job_config=job_config,
                args=["dagster", "api", "execute_step", "{}"],
                job_name=name,
                pod_name=name,
                component="step_worker",
                user_defined_k8s_config=context.run_k8s_config,
                labels={**labels, "dagster/op": pool},
                env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": "__ASSET_JOB"}],
            )
        )
    return [_to_dict(job) for job in jobs]


# -- everything ---------------------------------------------------------------------------------


def manifest_objects() -> list[Rendered]:
    rendered = []
    for path in MANIFESTS:
        if path in NOT_MANIFESTS:
            continue
        source = str(path.relative_to(DEPLOY))
        for obj in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if obj:
                rendered.append(Rendered(source, obj))
    return rendered


def values_objects() -> list[Rendered]:
    rendered = []
    for name, paths in values_files().items():
        values = load_values(paths)
        for obj in user_code_objects(values) + job_objects(values):
            rendered.append(Rendered(f"helm/{name}", obj))
    return rendered


def all_objects() -> list[Rendered]:
    return manifest_objects() + values_objects()


def write_rendered(out: Path) -> list[Path]:
    """Values-rendered objects, one file per values set (the manifests are scanned in place)."""
    out.mkdir(parents=True, exist_ok=True)
    by_source: dict[str, list[dict[str, Any]]] = {}
    for item in values_objects():
        by_source.setdefault(item.source, []).append(item.obj)
    paths = []
    for source, objects in by_source.items():
        path = out / (Path(source).stem + ".rendered.yaml")
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths


_VALIDATE = """
import json, sys
import kubernetes_validate as kv
objects, versions = json.load(sys.stdin)
out = []
for obj in objects:
    for version in versions:
        try:
            kv.validate(obj, version, strict=True)
            error = None
        except kv.ValidationError as e:
            error = f"{'/'.join(map(str, e.path))}: {e.message}"
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        out.append(error)
json.dump(out, sys.stdout)
"""


def validate(
    objects: list[Rendered], versions: tuple[str, ...] = KUBERNETES_VERSIONS
) -> dict[tuple[str, str, str], str | None]:
    """{(source, kind/name, version): error or None}, strict, by kubernetes-validate."""
    payload = json.dumps([[item.obj for item in objects], list(versions)])
    result = subprocess.run(
        [str(TOOLS_BIN / "python"), "-c", _VALIDATE],
        input=payload, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    errors = iter(json.loads(result.stdout))
    return {
        (item.source, item.name, version): next(errors) for item in objects for version in versions
    }


def checkov(paths: list[Path]) -> dict[str, Any]:
    """checkov's JSON report over files/folders, offline (no platform, no downloads)."""
    command = [str(TOOLS_BIN / "checkov"), "--compact", "-o", "json"]
    command += ["--skip-download", "--framework", *CHECKOV_FRAMEWORKS]
    for path in paths:
        command += ["-d" if path.is_dir() else "-f", str(path)]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BC_", "PRISMA_", "CKV_"))
    }
    env |= {"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode not in (0, 1):  # 1: findings
        raise RuntimeError(f"checkov failed ({result.returncode}): {result.stderr[-2000:]}")
    reports: list[dict[str, Any]] = []
    decoder, text, at = json.JSONDecoder(), result.stdout, 0
    while text[at:].strip():  # one JSON document per scanned root
        at += len(text[at:]) - len(text[at:].lstrip())
        document, at = decoder.raw_decode(text, at)
        reports += document if isinstance(document, list) else [document]
    return {"reports": reports}


def scan(out: Path) -> dict[str, Any]:
    """checkov over deploy/ (Dockerfile, manifests, values files) and the rendered objects.

    One root (a copy of deploy/ beside the rendered objects): checkov's graph checks, such as
    "every pod has a NetworkPolicy", only see objects scanned together. Paths in the report
    are mapped back to deploy/.
    """
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(DEPLOY, out / "deploy", ignore=shutil.ignore_patterns("__pycache__"))
    write_rendered(out / "rendered")
    report = checkov([out])
    copy_root = str((out / "deploy").resolve())
    seen, reports = set(), []
    for framework in report["reports"]:
        results = framework.get("results", {})
        for kind in ("failed_checks", "skipped_checks", "passed_checks"):
            unique = []
            for check in results.get(kind, []):
                path = check.get("file_abs_path", "")
                if path.startswith(copy_root):
                    check["file_abs_path"] = str(DEPLOY) + path[len(copy_root) :]
                key = (kind, check["check_id"], check["resource"], check["file_abs_path"])
                if key not in seen:
                    seen.add(key)
                    unique.append(check)
            results[kind] = unique
        reports.append(framework)
    return {"reports": reports}


def findings(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """`failed_checks` or `skipped_checks` of every framework in a checkov report."""
    return [
        check
        for framework in report["reports"]
        for check in framework.get("results", {}).get(kind, [])
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "deploy-rendered")
    args = parser.parse_args()
    objects = all_objects()
    invalid = {key: error for key, error in validate(objects).items() if error}
    print(f"{len(objects)} objects x Kubernetes {', '.join(KUBERNETES_VERSIONS)}: ", end="")
    print(f"{len(invalid)} invalid")
    for (source, name, version), error in invalid.items():
        print(f"  {source} {name} ({version}): {error}")
    report = scan(args.out)
    failed, skipped = findings(report, "failed_checks"), findings(report, "skipped_checks")
    print(f"checkov: {len(failed)} failed, {len(skipped)} suppressed (rendered: {args.out})")
    for check in failed:
        print(f"  {check['check_id']} {check['resource']} ({check['file_abs_path']}): ", end="")
        print(check["check_name"])
    return 1 if invalid or failed else 0


if __name__ == "__main__":
    sys.exit(main())
