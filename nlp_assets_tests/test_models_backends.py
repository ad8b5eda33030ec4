"""Embedding backends (docs/models.md "Backends"): every installed exported backend gives the
float32 torch embeddings within the accuracy gate on real text; `auto` serves the calibration
record's fastest candidate that passed the gate and says so in the step metadata and the cache
key; a failed, forged or corrupt candidate is never served (torch serves, with the reason); and
nothing in the artefact folder is unpickled.

One calibration of the installed backends on 60 real texts per session (ONNX Runtime and
OpenVINO export in seconds). The AOTInductor package is left to `nlp models calibrate` and
`bench.backends`: its compile takes 20-35 s on a 2-core machine."""

from __future__ import annotations

import copy
import json
import pickle
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nlp_assets.resources.model_cache import CacheStats
from nlp_assets.resources.models import (
    InferenceStats,
    ModelSpec,
    Served,
    backends,
    load_model,
    step_metadata,
)
from nlp_assets.resources.models.backends import Candidate
from nlp_assets.resources.models.calibrate import gate_texts, measure

EXPORTED = tuple(b for b in ("openvino", "onnxruntime") if b in backends.installed())


@pytest.fixture(scope="module")
def torch_path():
    return load_model(_spec("torch"))


@pytest.fixture
def embedder(torch_path):
    """The loaded torch embedder, choosing its backend again in the test; torch after it."""
    yield torch_path
    torch_path.choose_backend("torch")


@pytest.fixture(scope="module")
def calibrated(torch_path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The installed backends exported, gated and timed once into a private artefacts root."""
    root = tmp_path_factory.mktemp("model-artifacts")
    texts = gate_texts(40, 20)
    folder = backends.artefact_dir(torch_path.version, torch_path.device, root)
    found, _ = measure(texts, ("torch", *EXPORTED), folder, rounds=1, head_texts=200)
    _record(folder, {c.backend: c for c in found})
    return {"root": root, "folder": folder, "candidates": {c.backend: c for c in found}}


def _spec(backend: str) -> ModelSpec:
    return ModelSpec(
        name="minilm",
        task="embedding",
        format="sentence-encoder",
        device="cpu",
        max_windows=1,
        backend=backend,
    )


def _record(folder: Path, candidates: dict[str, Candidate]) -> None:
    backends.write_calibration(
        folder, {"candidates": {name: asdict(c) for name, c in candidates.items()}}
    )


@pytest.fixture
def artefacts(calibrated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the calibrated folder this test may break, as NLP_MODEL_ARTIFACTS_DIR."""
    root = tmp_path / "artifacts"
    folder = root / calibrated["folder"].relative_to(calibrated["root"])
    shutil.copytree(calibrated["folder"], folder)
    monkeypatch.setenv("NLP_MODEL_ARTIFACTS_DIR", str(root))
    return folder


@pytest.mark.parametrize("backend", EXPORTED)
def test_each_installed_backend_gives_torch_embeddings_within_the_gate_on_real_text(
    calibrated, backend
):
    candidate = calibrated["candidates"][backend]
    assert not candidate.error, candidate.error
    assert candidate.min_cosine >= backends.GATE_MIN_COSINE
    assert candidate.labels_agree >= backends.GATE_MIN_LABEL_AGREEMENT
    assert candidate.passed and candidate.served_as.startswith(backend)
    assert set(candidate.docs_per_s) == {"short", "long"}


def test_openvino_and_onnxruntime_are_installed_by_the_backends_extra():
    assert EXPORTED == ("openvino", "onnxruntime")


@pytest.mark.parametrize("backend", EXPORTED)
def test_auto_serves_the_recorded_fastest_passing_backend_and_says_so(
    calibrated, artefacts, embedder, backend
):
    candidates = copy.deepcopy(calibrated["candidates"])
    for name, candidate in candidates.items():  # make `backend` the fastest
        speed = 10_000.0 if name == backend else 1.0
        candidate.docs_per_s = {"short": speed, "long": speed}
    _record(artefacts, candidates)
    texts = [*gate_texts(10, 3)["short"], *gate_texts(10, 3)["long"]]
    torch_vectors, torch_key = embedder.embed_texts(texts), embedder.cache_version
    assert "backend" not in embedder.output_settings()  # torch's keys are what they always were
    embedder.choose_backend("auto")
    assert embedder.backend == candidates[backend].served_as, embedder.backend_note
    cosine = np.sum(embedder.embed_texts(texts) * torch_vectors, axis=1)
    assert cosine.min() >= backends.GATE_MIN_COSINE
    assert embedder.cache_version != torch_key  # other numerics: another cache key
    served = Served(embedder, "minilm", "minilm")
    metadata = step_metadata([served], CacheStats(), InferenceStats())
    assert metadata["backend"] == f"minilm: {embedder.backend}"


def test_a_candidate_that_failed_the_gate_is_never_served_even_when_fastest(
    calibrated, artefacts, embedder
):
    candidates = copy.deepcopy(calibrated["candidates"])
    for name, candidate in candidates.items():
        failed = name != "torch"
        candidate.passed = not failed
        candidate.min_cosine = 0.89 if failed else 1.0
        candidate.docs_per_s = {"short": 10_000.0 if failed else 1.0, "long": 1.0}
    _record(artefacts, candidates)
    embedder.choose_backend("auto")
    assert embedder.backend.startswith("torch-"), embedder.backend
    assert "torch is the fastest" in embedder.backend_note


def test_a_forged_passed_flag_over_figures_below_the_gate_is_not_believed(
    calibrated, artefacts, embedder
):
    candidates = copy.deepcopy(calibrated["candidates"])
    for name, candidate in candidates.items():
        forged = name != "torch"
        candidate.passed = True
        candidate.labels_agree = 0.9 if forged else 1.0
        candidate.docs_per_s = {"short": 10_000.0 if forged else 1.0, "long": 1.0}
    _record(artefacts, candidates)
    embedder.choose_backend("auto")
    assert embedder.backend.startswith("torch-"), embedder.backend


gate_figures = st.builds(
    Candidate,
    backend=st.sampled_from(backends.BACKENDS),
    passed=st.booleans(),
    min_cosine=st.floats(allow_nan=True, allow_infinity=True),
    labels_agree=st.floats(allow_nan=True, allow_infinity=True),
    docs_per_s=st.dictionaries(
        st.sampled_from(["short", "long"]), st.floats(allow_nan=True, allow_infinity=True)
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(gate_figures, max_size=8))
def test_choose_returns_only_a_candidate_that_passed_the_gate(candidates):
    chosen = backends.choose(candidates)
    if chosen is not None:
        assert chosen.passed
        assert chosen.min_cosine >= backends.GATE_MIN_COSINE
        assert chosen.labels_agree >= backends.GATE_MIN_LABEL_AGREEMENT
        assert all(
            c.speed <= chosen.speed
            for c in candidates
            if c.passed
            and c.min_cosine >= backends.GATE_MIN_COSINE
            and c.labels_agree >= backends.GATE_MIN_LABEL_AGREEMENT
        )


def _break(folder: Path, how: str) -> None:
    target = folder / backends.ARTEFACT_FILES["openvino"][1]  # the weights
    if how == "missing artefact":
        target.unlink()
    elif how == "truncated artefact":
        target.write_bytes(target.read_bytes()[:1000])
    elif how == "malformed record":
        (folder / backends.CALIBRATION_FILE).write_text("{not json", encoding="utf-8")
    elif how == "no record":
        (folder / backends.CALIBRATION_FILE).unlink()


@pytest.mark.skipif("openvino" not in EXPORTED, reason="the backends extra is not installed")
@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("missing artefact", "FileNotFoundError"),
        ("truncated artefact", "does not match its recorded sha256"),
        ("malformed record", "malformed"),
        ("no record", "no calibration record"),
    ],
)
def test_a_missing_or_corrupt_artefact_or_record_falls_back_to_torch_with_the_reason(
    calibrated, artefacts, embedder, how, reason
):
    candidates = copy.deepcopy(calibrated["candidates"])
    for name, candidate in candidates.items():
        speed = 10_000.0 if name == "openvino" else 1.0
        candidate.docs_per_s = {"short": speed, "long": speed}
    _record(artefacts, candidates)
    _break(artefacts, how)
    embedder.choose_backend("openvino")
    assert embedder.backend == f"torch-{embedder.dtype}"
    assert reason in embedder.backend_note and "torch serves" in embedder.backend_note
    out = embedder.embed_texts(["The screen is bright."])
    assert np.isclose(np.linalg.norm(out), 1.0, atol=1e-3)


class _Tripwire:
    """Unpickling this calls `_Tripwire.tripped`: the proof that a pickle was loaded."""

    fired = False

    def __reduce__(self):
        return (_trip, ())


def _trip() -> None:
    _Tripwire.fired = True


@pytest.mark.parametrize("backend", EXPORTED)
def test_no_pickle_is_loaded_from_the_artefact_folder(
    calibrated, artefacts, monkeypatch: pytest.MonkeyPatch, backend
):
    import torch

    def refuse(*_args, **_kwargs):
        raise AssertionError("a loader unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    candidate = calibrated["candidates"][backend]
    runner = backends.load_runner(backend, artefacts, 1, candidate.sha256)
    assert runner(np.array([[101, 2204, 102]]), np.ones((1, 3), dtype=np.int64)).shape == (1, 384)
    monkeypatch.undo()
    # a pickle planted as the artefact, its hash recorded too: refused or unreadable, never run
    target = artefacts / backends.ARTEFACT_FILES[backend][0]
    target.write_bytes(pickle.dumps(_Tripwire()))
    forged = {**candidate.sha256, target.name: backends.sha256_of(target)}
    with pytest.raises(Exception):  # noqa: B017 (each library words its parse error its own way)
        backends.load_runner(backend, artefacts, 1, forged)
    assert not _Tripwire.fired


def test_an_unknown_backend_name_is_refused_before_any_weights_load():
    with pytest.raises(Exception, match="unknown backend"):
        load_model(_spec("tensorrt"))


def test_the_record_is_plain_json(calibrated):
    record = json.loads((calibrated["folder"] / backends.CALIBRATION_FILE).read_text())
    assert set(record["candidates"]) >= {"torch", *EXPORTED}
