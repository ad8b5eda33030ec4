"""Content-addressed model checkpoints: a folder of versions and a pointer to the one serving.

Layout (a local folder; Hugging Face `from_pretrained` reads local files)::

    <root>/<version>/            one checkpoint (config, safetensors weights, tokenizer files)
    <root>/CURRENT               the version that serves, written atomically

The version is a hash of the checkpoint's files (names and bytes), so the same training on the
same data and seed gives the same version and any changed byte gives another. A checkpoint
holds no pickle: loading one never runs code from the lake. Plain Python (no Dagster).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import uuid
from pathlib import Path

from nlp_assets.atomic import write_atomic

CURRENT = "CURRENT"
#: Files that unpickle (torch .bin/.pt, joblib, pickle): refused in a checkpoint.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
VERSION_CHARS = 16


class CheckpointError(RuntimeError):
    pass


def checkpoint_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def content_hash(folder: Path) -> str:
    """sha256 over every file's relative name, size and bytes, in name order."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for file in checkpoint_files(folder):
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(str(file.stat().st_size).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:VERSION_CHARS]


def refuse_pickle(folder: Path) -> None:
    pickled = [p.name for p in checkpoint_files(folder) if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickled:
        raise CheckpointError(f"{folder}: checkpoint holds pickle files {pickled}; use safetensors")
    if not list(Path(folder).glob("*.safetensors")):
        raise CheckpointError(f"{folder}: no .safetensors weights")


def publish(staging: Path, root: Path) -> str:
    """Move a complete checkpoint folder to `<root>/<content hash>/` and return the version.
    `staging` must be on the same file system (e.g. `staging_dir(root)`). An existing folder
    of that version holds the same bytes: it stays, `staging` is removed."""
    refuse_pickle(staging)
    version = content_hash(staging)
    target = Path(root) / version
    if target.exists():
        shutil.rmtree(staging)
    else:
        os.replace(staging, target)
    return version


def staging_dir(root: Path) -> Path:
    path = Path(root) / f"_staging-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    return path


def set_current(root: Path, version: str) -> None:
    """Point `<root>/CURRENT` at a published version (temp file + rename: atomic)."""
    if not (Path(root) / version).is_dir():
        raise CheckpointError(f"no checkpoint {version} under {root}")
    write_atomic(Path(root) / CURRENT, (version + "\n").encode())


def current_version(root: Path) -> str | None:
    pointer = Path(root) / CURRENT
    return pointer.read_text().strip() if pointer.is_file() else None


def resolve_current(path: Path) -> tuple[Path, str | None]:
    """A folder with a CURRENT pointer resolves to the version it names, checked: the folder's
    files must hash to its name and hold no pickle. Any other folder is returned as is."""
    version = current_version(path)
    if version is None:
        return Path(path), None
    folder = Path(path) / version
    if not folder.is_dir():
        raise CheckpointError(f"{path}/{CURRENT} names {version!r}, which is not there")
    refuse_pickle(folder)
    actual = content_hash(folder)
    if actual != version:
        raise CheckpointError(
            f"{folder}: files hash to {actual}, not to the version {version} (changed on disk)"
        )
    labels, outputs = classifier_outputs(folder)
    if outputs is not None and outputs != labels:
        raise CheckpointError(
            f"{folder}: config.json names {labels} labels but the classifier weights have "
            f"{outputs} outputs"
        )
    return folder, version


def classifier_outputs(folder: Path) -> tuple[int, int | None]:
    """Labels config.json names, and rows of the classification layer's weight (read from
    the safetensors headers: no tensor is loaded); None when there is no such layer."""
    config = json.loads((Path(folder) / "config.json").read_text())
    labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 0))
    outputs = None
    for file in Path(folder).glob("*.safetensors"):
        with file.open("rb") as handle:
            size = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(size))
        for key, info in header.items():
            if key.endswith(("classifier.weight", "score.weight")):
                outputs = int(info["shape"][0])
    return labels, outputs
