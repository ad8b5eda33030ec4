"""Owners, tags, code versions and catalog metadata, applied to every asset spec in one pass
(`apply`).

- Owners and a `domain` tag come from the asset's group, so a new asset in a group is owned
  the day it is added.
- A stage's `code_version` is a hash of its sources and of the models it runs. Its sources are
  the module that defines it and every first-party module that module imports, directly or
  through others (`sources`: the import statements read with `ast`, function-level imports
  included, nothing executed). Change a kernel, or a module a stage reaches only through
  another (the entity spans and window pooling of the model adapters, say), or point
  `NLP_EMBEDDING_MODEL_PATH` at another checkpoint, and the UI shows the stage, and everything
  downstream of it, as stale ("code version changed") instead of silently mixing old and new
  partitions. No list is kept by hand, so none can fall behind the imports.

  The closure is by module, so it errs on the side of stale: `schemas.py` imports every
  kernel's schema, so a kernel edit moves every stage that checks a schema.
- Every asset the lake IO manager stores (a Delta table) gets `dagster/table_name` and
  `dagster/uri`, and a documented `dagster/column_schema` (columns, types, nullability and
  checks) when `nlp_assets.catalog` declares its schema, so the UI shows what a table holds
  before its first run.
"""

from __future__ import annotations

import ast
import gc
import hashlib
import importlib
import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg

from nlp_assets import catalog
from nlp_assets.stages.common import QUARANTINE_TAG, TRUE

PACKAGE_NAME = "nlp_assets"

#: Group -> the team that answers for it (Dagster owners: `team:<name>` or an e-mail).
OWNERS_BY_GROUP: Mapping[str, str] = {
    "sources": "team:data-platform",
    "ingest": "team:data-platform",
    "preprocess": "team:data-platform",
    "features": "team:ml",
    "inference": "team:ml",
    "models": "team:ml",
    "analytics": "team:analytics",
    "warehouse": "team:analytics",
    "downstream": "team:analytics",
}


def _module_file(name: str) -> Path | None:
    """The source file of a first-party module, or None when `name` is not a module (an
    attribute: `from nlp_assets.kernels.predict import predict_documents`)."""
    parent, _, leaf = name.rpartition(".")
    if not parent:
        package = importlib.import_module(name)
        return Path(package.__file__ or "")
    try:
        folders = getattr(importlib.import_module(parent), "__path__", None)
    except ImportError:
        return None
    for folder in folders or []:
        for candidate in (Path(folder) / leaf / "__init__.py", Path(folder) / f"{leaf}.py"):
            if candidate.is_file():
                return candidate
    return None


def parse_python(source: str | bytes, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse` with the garbage collector paused.

    On CPython 3.11 a collection during `ast.parse` can run a finalizer that logs a traceback,
    and formatting it parses source again; that nested parse resets the AST constructor's
    recursion counter and the outer one fails with `SystemError: AST constructor recursion
    depth mismatch` (cpython gh-106905). It failed a CI run once, when a leaked SQLite
    connection was finalized in the middle of a parse.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source, filename=filename)
    finally:
        if enabled:
            gc.enable()


@cache
def _imports(module: str) -> frozenset[str]:
    """First-party modules that `module`'s source imports anywhere (top level or in a
    function), parents of dotted names included (importing `a.b` runs `a/__init__.py`)."""
    file = _module_file(module)
    if file is None:
        return frozenset()
    named: set[str] = set()
    for node in ast.walk(parse_python(file.read_bytes(), filename=str(file))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named.add(node.module)
            named.update(f"{node.module}.{alias.name}" for alias in node.names)
    found: set[str] = set()
    for name in named:
        if name.split(".")[0] != PACKAGE_NAME:
            continue
        parts = name.split(".")
        found.update(
            prefix
            for prefix in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
            if _module_file(prefix) is not None
        )
    found.discard(module)
    return frozenset(found)


@cache
def sources(module: str) -> tuple[str, ...]:
    """`module` and every first-party module it imports, directly or not: sorted names."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_imports(name))
    return tuple(sorted(seen))


def defining_module(assets_def: dg.AssetsDefinition) -> str:
    """The module of the function that computes the asset."""
    compute_fn: Any = getattr(assets_def.node_def, "compute_fn", None)
    function = getattr(compute_fn, "decorated_fn", compute_fn)
    return str(function.__module__)


def source_version(
    modules: Sequence[str],
    models: Sequence[str] = (),
    read: Callable[[Path], bytes] = Path.read_bytes,
) -> str:
    """First 12 hex digits of sha256 over the modules' names and source bytes and the model
    identities."""
    digest = hashlib.sha256()
    for name in modules:
        file = _module_file(name)
        digest.update(b"\0module:" + name.encode())
        digest.update(read(file) if file is not None else b"")
    for model in models:
        digest.update(b"\0model:" + model.encode())
    return digest.hexdigest()[:12]


def code_versions(
    assets: Iterable[Any],
    model_identities: Mapping[str, Sequence[str]],
    read: Callable[[Path], bytes] = Path.read_bytes,
) -> dict[str, str]:
    """`code_version` of each materialisable asset of `assets` (AssetsDefinitions; specs are
    skipped): the `sources` of its defining module plus the models it runs
    (`model_identities`: asset -> strings naming each model and its settings). `read` reads a
    source file (a test passes an edited one)."""
    versions: dict[str, str] = {}
    for assets_def in assets:
        if not isinstance(assets_def, dg.AssetsDefinition) or not assets_def.is_executable:
            continue
        modules = sources(defining_module(assets_def))
        for key in assets_def.keys:
            name = key.to_user_string()
            versions[name] = source_version(modules, model_identities.get(name, ()), read)
    return versions


def with_source_code_references(assets: Sequence[Any]) -> list[Any]:
    """`dg.with_source_code_references`, pointing a stage at its own function: Dagster reads the
    file of the function it calls, which for a stage is the step-span wrapper `stage_asset` puts
    around it (`functools.wraps` keeps the original as `__wrapped__`)."""
    out: list[Any] = []
    for asset in assets:
        compute = getattr(getattr(asset, "node_def", None), "compute_fn", None)
        wrapped = getattr(getattr(compute, "decorated_fn", None), "__wrapped__", None)
        if wrapped is None:
            out += dg.with_source_code_references([asset])
            continue
        source = inspect.getsourcefile(wrapped)
        assert source is not None
        references = dg.CodeReferencesMetadataValue(
            code_references=[
                dg.LocalFileCodeReference(
                    file_path=os.path.abspath(source),
                    line_number=inspect.getsourcelines(wrapped)[1],
                )
            ]
        )
        out.append(
            asset.map_asset_specs(
                lambda spec, refs=references: spec.replace_attributes(
                    metadata={**spec.metadata, "dagster/code_references": refs}
                )
            )
        )
    return out


def apply(assets: Iterable[Any], code_versions: Mapping[str, str]) -> list[Any]:
    """Every spec (of AssetsDefinitions and AssetSpecs) gets its group's owner and `domain`
    tag; the assets of `code_versions` get theirs; every asset the lake IO manager stores gets
    its table name and URI, and its column schema when declared (`catalog.table_metadata`), so
    the UI shows them before any run."""

    def conventions(spec: dg.AssetSpec) -> dg.AssetSpec:
        group = spec.group_name or "default"
        if group not in OWNERS_BY_GROUP:
            raise ValueError(
                f"asset {spec.key.to_user_string()} is in group {group!r}, which has no owner "
                "in nlp_assets/conventions.py OWNERS_BY_GROUP"
            )
        changes: dict[str, Any] = {
            "owners": sorted({*spec.owners, OWNERS_BY_GROUP[group]}),
            "tags": {**spec.tags, "domain": group},
        }
        name = spec.key.to_user_string()
        if name in code_versions:
            changes["code_version"] = code_versions[name]
        if name in tables:
            quarantine = spec.tags.get(QUARANTINE_TAG) == TRUE
            changes["metadata"] = {
                **spec.metadata,
                **catalog.table_metadata(name, quarantine=quarantine),
            }
        return spec.replace_attributes(**changes)

    assets = list(assets)
    tables = catalog.lake_assets(assets)
    return list(dg.map_asset_specs(conventions, assets))
