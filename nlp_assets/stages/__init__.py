"""One module per asset of the pipeline and of its models (thin wiring over `nlp_assets.kernels`).

`stage_assets()` loads every asset of this package; `stage_names(selection)` names the ones a
selection of `nlp_assets.stages.common` picks (`PIPELINE`, `DAY_SCOPE`, ...), from their tags.
"""

from __future__ import annotations

from functools import cache
from graphlib import TopologicalSorter

import dagster as dg


@cache
def stage_assets() -> tuple[dg.AssetsDefinition, ...]:
    """Every asset defined in a module of this package, loaded once."""
    import nlp_assets.stages

    loaded = dg.load_assets_from_package_module(nlp_assets.stages)
    return tuple(a for a in loaded if isinstance(a, dg.AssetsDefinition))


@cache
def stage_names(selection: dg.AssetSelection) -> tuple[str, ...]:
    """The names of the assets of this package that `selection` picks, upstream first (ties
    by name)."""
    assets = stage_assets()
    chosen = selection.resolve(assets)
    sorter: TopologicalSorter[dg.AssetKey] = TopologicalSorter()
    for assets_def in assets:
        for key, deps in assets_def.asset_deps.items():
            sorter.add(key, *deps)
    sorter.prepare()
    ordered: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda key: key.to_user_string())
        ordered += [key.to_user_string() for key in ready if key in chosen]
        sorter.done(*ready)
    return tuple(ordered)
