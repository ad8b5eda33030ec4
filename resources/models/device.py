"""Where a model runs and in which dtype: device choice, the reduced dtype to try, and the
Kubernetes GPU request of model steps. torch is imported only when a choice is made."""

from __future__ import annotations

from typing import Any

#: Most texts per torch batch by device, measured (`python -m bench.models`, docs/models.md
#: "Batch shapes"). On this project's 2-core CPU, float32, MiniLM: 600 review sentences of 27
#: tokens ran at 376 docs/s in batches of at most 64 against 235-251 with the 16,384-token
#: budget alone (431 rows a batch), the same on 250-token news (64 rows either way). CUDA: no
#: cap until measured on a GPU (the token budget alone).
BATCH_ROWS = {"cpu": 64, "cuda": 0}


def batch_rows_for(device: str, configured: int = 0) -> int:
    """The row cap of a batch: the configured one, else the device's measured default."""
    return configured or BATCH_ROWS.get(device.split(":")[0], 0)


def pick_device(device: str) -> str:
    """'auto': CUDA when present, else CPU; any other value as given."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def cpu_has_bf16() -> bool:
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def candidate_dtype(dtype: str, device: str) -> str:
    """The reduced dtype to try under 'auto', or the explicit one."""
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_bf16() else "float32"


def model_pool() -> str | None:
    """The concurrency pool of the model steps: `gpu` (limit 1 in dagster.yaml) when each run
    loads its own models, so one device is never oversubscribed; none with a model server
    (`NLP_MODEL_SERVER_URL`), which owns the device and batches concurrent runs' requests."""
    from nlp_assets import settings

    return None if settings.model_server() else "gpu"


def gpu_op_tags() -> dict[str, Any]:
    """Kubernetes GPU request for model steps when NLP_DEVICE=cuda (k8s_job_executor) and no
    model server holds the models."""
    from nlp_assets import settings

    if settings.model_device() != "cuda" or settings.model_server():
        return {}
    return {
        "dagster-k8s/config": {
            "container_config": {
                "resources": {
                    "limits": {"nvidia.com/gpu": "1"},
                    "requests": {"nvidia.com/gpu": "1"},
                }
            }
        }
    }
