"""Embedding backends: the same MiniLM forward pass through torch, a torch package compiled
ahead of time (AOTInductor), OpenVINO or ONNX Runtime, and the calibration record that says
which one this machine serves (docs/models.md "Backends").

An exported artefact is the encoder with mean pooling and L2 normalisation inside
(`PooledEncoder`), stored under the artefacts folder keyed by model version and device
signature (CPU flags, torch version), next to `calibration.json`: the gate's figures and docs/s
of every candidate (`nlp models calibrate` writes it). `auto` reads that file and serves the
fastest candidate that passed the gate; no file, a corrupt one, a missing artefact or one whose
sha256 differs from the record: torch serves and the reason is kept. Nothing in the folder is
unpickled: ONNX and OpenVINO read protobuf/XML and raw weights, the AOT package is a zip of a
shared library whose weights are compiled in; every file is checked against its sha256 first.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nlp_assets import settings

#: What `ModelSpec.backend` accepts: `auto` (the calibration record's choice) or one of these.
BACKENDS = ("torch", "torch-aot", "openvino", "openvino-int8", "onnxruntime")
CALIBRATION_FILE = "calibration.json"
#: The accuracy gate of a candidate against float32 torch (issue 25): min cosine over the
#: calibration texts and sentiment labels (the trained head) agreeing on this share of them.
GATE_MIN_COSINE = 0.999
GATE_MIN_LABEL_AGREEMENT = 0.995
#: Files each exported backend is made of (the first is the one that is loaded).
ARTEFACT_FILES = {
    "torch-aot": ("encoder.pt2",),
    "openvino": ("encoder.xml", "encoder.bin"),
    "openvino-int8": ("encoder-int8.xml", "encoder-int8.bin"),
    "onnxruntime": ("encoder.onnx",),
}
_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]


def artifacts_root() -> Path:
    """`NLP_MODEL_ARTIFACTS_DIR`, else `<NLP_DATA_DIR>/model-artifacts`."""
    return settings.model_artifacts_dir()


def device_signature(device: str) -> str:
    """What an exported artefact and its timings depend on besides the weights: the device
    (CPU: the instruction sets the kernels use; CUDA: the card) and the torch version."""
    import torch

    if device.startswith("cuda"):
        kind = re.sub(r"[^A-Za-z0-9]+", "_", torch.cuda.get_device_name(0)).strip("_")
    else:
        try:
            text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
            flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split())  # type: ignore[union-attr]
        except (OSError, AttributeError):
            flags = set()
        kind = "cpu-" + (".".join(f for f in _CPU_FLAGS if f in flags) or "generic")
    return f"{kind}-torch{torch.__version__.split('+')[0]}"


def artefact_dir(version: str, device: str, root: Path | None = None) -> Path:
    """The folder of one model version's artefacts on this kind of device."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", version)[:80] or "unversioned"
    return (root or artifacts_root()) / safe / device_signature(device)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- export -------------------------------------------------------------------------------------


def pooled_encoder(model: Any) -> Any:
    """The encoder with mean pooling over the attention mask and L2 normalisation, as one
    module (what every backend exports): (input_ids, attention_mask) -> float32 vectors."""
    import torch

    class PooledEncoder(torch.nn.Module):
        def __init__(self, encoder: Any):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            weights = attention_mask.unsqueeze(-1).to(torch.float32)
            summed = (hidden.last_hidden_state.float() * weights).sum(1)
            pooled = summed / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return PooledEncoder(model).eval()


def _example(max_length: int) -> tuple[Any, Any]:
    import torch

    ids = torch.full((2, min(16, max_length)), 1000, dtype=torch.long)
    return ids, torch.ones_like(ids)


def export(backend: str, model: Any, folder: Path, max_length: int) -> Path:
    """Export a float32 `transformers` encoder for `backend` into `folder`; the file to load."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    module = pooled_encoder(model)
    example = _example(max_length)
    target = folder / ARTEFACT_FILES[backend][0]
    if backend == "onnxruntime":
        axes = {0: "batch", 1: "tokens"}
        with torch.no_grad():
            torch.onnx.export(
                module,
                example,
                str(target),
                input_names=["input_ids", "attention_mask"],
                output_names=["embeddings"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes},
                opset_version=17,
                dynamo=False,
            )
    elif backend in ("openvino", "openvino-int8"):
        import openvino as ov

        with torch.no_grad():
            converted = ov.convert_model(
                module,
                example_input=example,
                input=[ov.PartialShape([-1, -1]), ov.PartialShape([-1, -1])],
            )
        if backend == "openvino-int8":  # NNCF: int8 weights (asymmetric, per channel)
            import nncf

            converted = nncf.compress_weights(converted, mode=nncf.CompressWeightsMode.INT8_ASYM)
        ov.save_model(converted, str(target), compress_to_fp16=False)
    elif backend == "torch-aot":
        import copy

        import torch._inductor.config as inductor

        batch = torch.export.Dim("batch", min=1, max=4096)
        tokens = torch.export.Dim("tokens", min=2, max=max_length)
        shapes = ({0: batch, 1: tokens}, {0: batch, 1: tokens})
        if _cpu_bf16(model):  # the whole encoder in bf16 (pooling in float32): within the gate
            module = pooled_encoder(copy.deepcopy(model).to(torch.bfloat16))
        # freezing: weights folded and prepacked for oneDNN (unfrozen, the package ran at 43%
        # of torch bf16 on short texts and 24% on long ones in one calibration run)
        with torch.no_grad(), inductor.patch(freezing=True):
            program = torch.export.export(module, example, dynamic_shapes=shapes)
            torch._inductor.aoti_compile_and_package(program, package_path=str(target))
    else:
        raise ValueError(f"no export for backend {backend!r}")
    return target


def _cpu_bf16(model: Any) -> bool:
    from nlp_assets.resources.models.device import cpu_has_bf16

    return next(model.parameters()).device.type == "cpu" and cpu_has_bf16()


# -- load ---------------------------------------------------------------------------------------


def precision_of(backend: str, device: str) -> str:
    """The name a backend serves under, with its precision (e.g. 'openvino-bf16')."""
    if backend == "openvino-int8":
        return backend
    if backend in ("openvino", "torch-aot") and device == "cpu":
        from nlp_assets.resources.models.device import cpu_has_bf16

        return f"{backend}-{'bf16' if cpu_has_bf16() else 'fp32'}"
    if backend == "onnxruntime":
        return "onnxruntime-fp32"
    return backend


def load_runner(backend: str, folder: Path, threads: int, sha256: dict[str, str]) -> Runner:
    """A loaded artefact as `run(input_ids, attention_mask) -> vectors` (numpy int64 in,
    float32 out), one call at a time (an OpenVINO infer request is not thread-safe, and the
    registry shares a model across a process's threads). Every file is checked against
    `sha256` (the calibration record) first."""
    run = _load_runner(backend, folder, threads, sha256)
    lock = threading.Lock()

    def serialised(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with lock:
            return run(ids, mask)

    return serialised


def _load_runner(backend: str, folder: Path, threads: int, sha256: dict[str, str]) -> Runner:
    files = [folder / name for name in ARTEFACT_FILES[backend]]
    for path in files:
        if not path.is_file() or path.is_symlink():
            raise FileNotFoundError(f"{backend}: no artefact {path}")
        expected = sha256.get(path.name)
        if not expected or sha256_of(path) != expected:
            raise ValueError(f"{backend}: {path.name} does not match its recorded sha256")
    target = files[0]
    if backend == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])

        def run_onnx(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            out = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            return np.asarray(out, dtype=np.float32)

        return run_onnx
    if backend in ("openvino", "openvino-int8"):
        import openvino as ov

        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads}
        if precision_of("openvino", "cpu").endswith("bf16"):
            config["INFERENCE_PRECISION_HINT"] = "bf16"
        compiled = ov.Core().compile_model(str(target), "CPU", config)
        request = compiled.create_infer_request()

        def run_openvino(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            result = request.infer({0: ids, 1: mask})
            return np.asarray(result[compiled.output(0)], dtype=np.float32)

        return run_openvino
    if backend == "torch-aot":
        import torch

        package = torch._inductor.aoti_load_package(str(target))

        def run_aot(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = package(torch.from_numpy(ids), torch.from_numpy(mask))
            return out.float().numpy()

        return run_aot
    raise ValueError(f"no runner for backend {backend!r}")


# -- the calibration record ---------------------------------------------------------------------


@dataclass
class Candidate:
    """One backend's line in the calibration record."""

    backend: str
    served_as: str = ""
    passed: bool = False
    min_cosine: float = 0.0
    labels_agree: float = 0.0
    docs_per_s: dict[str, float] = field(default_factory=dict)
    export_s: float = 0.0
    load_s: float = 0.0
    sha256: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def speed(self) -> float:
        """One figure to rank by: the harmonic mean of docs/s over the text kinds."""
        rates = [r for r in self.docs_per_s.values() if math.isfinite(r) and r > 0]
        if not rates or len(rates) != len(self.docs_per_s):  # a kind not measured, or nonsense
            return 0.0
        return len(rates) / sum(1 / r for r in rates)


def write_calibration(folder: Path, record: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CALIBRATION_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def read_candidates(folder: Path) -> list[Candidate]:
    """The candidates of a calibration record (ValueError when it is missing or malformed)."""
    path = folder / CALIBRATION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no calibration record {path} (run `nlp models calibrate`)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        raw = record["candidates"]
        if not isinstance(raw, dict):
            raise TypeError("candidates is not an object")
        out = []
        for name, entry in raw.items():
            candidate = Candidate(
                backend=str(name),
                served_as=str(entry.get("served_as", name)),
                passed=entry.get("passed") is True,
                min_cosine=float(entry.get("min_cosine", 0.0)),
                labels_agree=float(entry.get("labels_agree", 0.0)),
                docs_per_s={str(k): float(v) for k, v in entry.get("docs_per_s", {}).items()},
                sha256={str(k): str(v) for k, v in entry.get("sha256", {}).items()},
                error=str(entry.get("error", "")),
            )
            out.append(candidate)
        return out
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(f"calibration record {path} is malformed: {error}") from error


def choose(candidates: list[Candidate], available: tuple[str, ...] = BACKENDS) -> Candidate | None:
    """The fastest candidate that passed the gate (re-checked from its figures: a record
    saying `passed` over figures below the gate is not believed) and whose library is here."""
    ok = [
        c
        for c in candidates
        if c.passed
        and c.backend in available
        and c.min_cosine >= GATE_MIN_COSINE
        and c.labels_agree >= GATE_MIN_LABEL_AGREEMENT
        and c.speed > 0
    ]
    return max(ok, key=lambda c: c.speed, default=None)


def installed(*, export: bool = False) -> tuple[str, ...]:
    """The backends whose libraries are importable here (torch always); `export`: those this
    machine can also export (openvino-int8 needs NNCF to be made, not to run)."""
    import importlib.util

    def has(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    out = ["torch", "torch-aot"]
    if has("openvino"):
        out.append("openvino")
        if not export or has("nncf"):
            out.append("openvino-int8")
    if has("onnxruntime"):
        out.append("onnxruntime")
    return tuple(out)
