"""mypy over one module tree: `nlp_assets` with `resources/` and `sensors/` as
`nlp_assets.resources` and `nlp_assets.sensors`, the names the installed package gives them.

setuptools maps those two folders into the package (`[tool.setuptools.package-dir]`); an
editable install does it with an import finder that mypy does not follow, so plain `mypy` would
name their files `resources.*` and `sensors.*` and fail to find `nlp_assets.resources.*`
(`ignore_missing_imports = false` for `nlp_assets.*` makes that an error, never a silent `Any`).
This runs mypy itself, with its own arguments and `[tool.mypy]` configuration, after giving
those files their package names from the same mapping. `make typecheck` and pre-commit call it:

    python -m dev.typecheck [mypy arguments]
"""

from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path

from mypy.fscache import FileSystemCache
from mypy.main import process_options, run_build
from mypy.util import count_stats

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """`{folder: package}` for every folder pyproject.toml maps into the package, e.g.
    `{"resources": "nlp_assets.resources"}`."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    mapping: dict[str, str] = config["tool"]["setuptools"].get("package-dir", {})
    return {folder: package for package, folder in mapping.items() if package}


def installed_name(module: str, folders: dict[str, str]) -> str:
    """The name of module `resources.lake` once installed: `nlp_assets.resources.lake`."""
    head, _, rest = module.partition(".")
    if head in folders:
        return folders[head] + (f".{rest}" if rest else "")
    return module


def main(argv: list[str] | None = None) -> int:
    """mypy's own command line (`mypy.main.main`) with the sources renamed; its exit status."""
    started = time.time()
    fscache = FileSystemCache()
    args = sys.argv[1:] if argv is None else argv
    sources, options = process_options(args, stdout=sys.stdout, stderr=sys.stderr, fscache=fscache)
    folders = package_dirs()
    for source in sources:
        source.module = installed_name(source.module, folders)
    # run_build prints every message as mypy does; the summary line is mypy's too
    _, messages, blockers = run_build(sources, options, fscache, started, sys.stdout, sys.stderr)
    errors, notes, files = count_stats(messages)
    if messages and notes < len(messages):
        print(f"Found {errors} errors in {files} files (checked {len(sources)} source files)")
        return 2 if blockers else 1
    print(f"Success: no issues found in {len(sources)} source files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
