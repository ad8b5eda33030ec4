"""The step executor: in-process/multiprocess by default, `k8s_job_executor` on Kubernetes.

`NLP_EXECUTOR=k8s` makes every step a Kubernetes Job whose pod comes from the profile file
`NLP_K8S_EXECUTOR_CONFIG` names (the image's `/opt/dagster/app/deploy/k8s/executor.yaml`; an
absolute path: never resolved against the current directory): steps of the `gpu`
pool request `nvidia.com/gpu`, steps of the `spark` pool a Spark driver's resources. Unset, the
code location uses Dagster's default executor and never imports the Kubernetes client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from nlp_assets import settings


def load_k8s_profile(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path or settings.k8s_executor_config_path())
    if not path.is_absolute() or not path.is_file():
        raise FileNotFoundError(
            f"k8s executor config {str(path)!r} is not an absolute path to a file: set "
            "NLP_K8S_EXECUTOR_CONFIG to the deploy/k8s/executor.yaml shipped in the image "
            "(/opt/dagster/app/deploy/k8s/executor.yaml)"
        )
    profile = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(profile) - {"executor", "pools"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}")
    return profile


def k8s_executor_config(assets: Iterable[Any], profile: Mapping[str, Any]) -> dict[str, Any]:
    """k8s_job_executor config with `per_step_k8s_config` for every asset in a listed pool."""
    config = dict(profile.get("executor") or {})
    pools: Mapping[str, Any] = profile.get("pools") or {}
    per_step = dict(config.get("per_step_k8s_config") or {})
    for asset in assets:
        if not isinstance(asset, dg.AssetsDefinition) or not asset.is_executable:
            continue  # external assets (AssetSpec, source assets) have no step
        pool = asset.op.pool
        if pool is not None and pool in pools:
            per_step.setdefault(asset.op.name, pools[pool])
    if per_step:
        config["per_step_k8s_config"] = per_step
    return config


def executor_from_env(assets: Iterable[Any]) -> dg.ExecutorDefinition | None:
    """The executor `NLP_EXECUTOR` asks for: None (Dagster's default) or the k8s job executor."""
    choice = settings.executor_choice()
    if choice == "default":
        return None
    if choice != "k8s":
        raise ValueError(f"NLP_EXECUTOR={choice!r}: use 'default' or 'k8s'")
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config(assets, load_k8s_profile()))


def micro_batch_run_config() -> dict[str, Any]:
    """Run config of a Kafka micro-batch: one process for the whole run with Dagster's default
    executor. A run of a few thousand messages is mostly start-up otherwise: each of its nine
    steps would start a process that imports the code location and loads its models again
    (10-20 s each, measured with the daemon in `test_chaos_streaming.py`). On Kubernetes
    (`NLP_EXECUTOR=k8s`) steps stay pods and the executor's own config applies."""
    if settings.executor_choice() != "default":
        return {}
    return {"execution": {"config": {"in_process": {}}}}
