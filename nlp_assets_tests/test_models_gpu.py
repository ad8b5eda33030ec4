"""The model layer on a CUDA device (marker `gpu`; skipped where there is none): the embedder
picks CUDA under `auto`, serves a reduced dtype only within tolerance of float32, and gives
the CPU's vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nlp_assets.resources.models import MIN_COSINE, ModelResource

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

TEXTS = [
    "The battery lasts two days and the screen is bright.",
    "Terrible service: the order arrived late and the box was broken.",
    "Apple opened a new office in Berlin, Germany, on Monday.",
] * 20


def test_auto_device_is_cuda_and_a_reduced_dtype_stays_within_tolerance():
    gpu = ModelResource(device="auto").embedder
    cpu = ModelResource(device="cpu", dtype="float32").embedder
    assert gpu.device == "cuda"
    assert gpu.dtype in ("float16", "bfloat16", "float32")
    cosine = np.sum(gpu.embed_texts(TEXTS) * cpu.embed_texts(TEXTS), axis=1)
    assert cosine.min() >= MIN_COSINE
