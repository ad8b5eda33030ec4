"""Settings: one typed object read from the environment, and nothing done at import.

`nlp_assets.settings.get()` is the process's `Settings`; importing the package reads and writes
nothing (no warning filter, no marker in DAGSTER_HOME); the instance check runs when a run
starts (the lake's setup) and under `dg check defs`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from nlp_assets import settings
from nlp_assets.executor import load_k8s_profile
from nlp_assets.resources.lake import LakeResource

REPO = Path(__file__).parents[1]


def test_settings_are_one_typed_object_built_once_per_environment(monkeypatch) -> None:
    monkeypatch.setenv("NLP_KAFKA_MAX_MESSAGES_PER_RUN", "250")
    monkeypatch.setenv("KAFKA_EXTRA_CONFIG", '{"linger.ms": 5}')
    first = settings.get()
    assert first is settings.get()  # read once: the same object while nothing changes
    assert first.kafka_max_messages_per_run == 250 == settings.kafka_max_messages_per_run()
    assert settings.kafka_extra_config() == {"linger.ms": 5}
    monkeypatch.setenv("NLP_KAFKA_MAX_MESSAGES_PER_RUN", "300")
    assert settings.get() is not first and settings.kafka_max_messages_per_run() == 300


def test_a_bad_value_fails_naming_its_variable(monkeypatch) -> None:
    monkeypatch.setenv("NLP_NER_PROCESSES", "-1")
    with pytest.raises(ValueError, match="NLP_NER_PROCESSES"):
        settings.get()
    monkeypatch.setenv("NLP_NER_PROCESSES", "many")
    with pytest.raises(ValueError, match="NLP_NER_PROCESSES"):
        settings.ner_processes()


def test_the_api_reads_the_same_settings_object_and_a_bad_api_value_names_its_variable(
    monkeypatch,
) -> None:
    from nlp_assets.api.config import ApiSettings

    monkeypatch.setenv("NLP_API_RATE_BURST", "7")
    monkeypatch.setenv("NLP_JWT_ALGORITHMS", " ES256 , EdDSA,")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:s3cret@db/nlp")
    api = ApiSettings.from_env()
    assert api.rate_burst == 7 == settings.get().api_rate_burst
    assert api.jwt_algorithms == ("ES256", "EdDSA")
    assert api.database_url == "postgresql://app:s3cret@db/nlp"
    assert "s3cret" not in repr(settings.get())  # a secret field, never shown
    monkeypatch.setenv("NLP_API_RATE_BURST", "lots")
    with pytest.raises(ValueError, match="NLP_API_RATE_BURST"):
        ApiSettings.from_env()


def test_an_empty_variable_is_unset(monkeypatch) -> None:
    monkeypatch.setenv("NLP_DEVICE", "")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "")
    assert settings.model_device() == "auto"
    assert settings.get().kafka_sasl_mechanism is None


def test_importing_the_package_and_its_definitions_changes_nothing(tmp_path: Path) -> None:
    """No global warning filter from `import nlp_assets` (the API and `nlp_assets.read` import
    it), and no file written into a staging DAGSTER_HOME by loading the definitions."""
    home = tmp_path / "home"
    home.mkdir()
    code = """
        import warnings
        before = list(warnings.filters)
        import nlp_assets, nlp_assets.read, nlp_assets.settings, nlp_assets.api.config
        added = [f for f in warnings.filters if f not in before]  # numpy, scipy add their own
        ours = [f for f in added if "dagster" in f[2].__module__ or "Asset job" in str(f[1])]
        assert ours == [], ours
        import nlp_assets.definitions
        print("loaded")
    """
    env = {
        **os.environ,
        "NLP_ENV": "staging",
        "DAGSTER_HOME": str(home),
        "NLP_DATA_DIR": str(tmp_path / "data"),
    }
    for variable in settings.ENVIRONMENT_VARIABLES.values():
        env.pop(variable, None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-3000:]
    assert list(home.iterdir()) == []


@pytest.fixture
def staging(monkeypatch, tmp_path: Path) -> Path:
    """This process as the staging environment with a DAGSTER_HOME of its own."""
    for variable in (*settings.ENVIRONMENT_VARIABLES.values(), "NLP_KAFKA_TOPICS"):
        monkeypatch.delenv(variable, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("NLP_ENV", "staging")
    monkeypatch.setenv("NLP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def _run_with_the_lake(tmp_path: Path) -> dg.ExecuteInProcessResult:
    @dg.asset
    def uses_the_lake(lake: LakeResource) -> None: ...

    return dg.materialize(
        [uses_the_lake],
        resources={"lake": LakeResource(root=str(tmp_path / "lake"))},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_a_run_start_marks_the_instance_as_its_environments(staging: Path, tmp_path) -> None:
    assert _run_with_the_lake(tmp_path).success
    assert (staging / settings.INSTANCE_MARKER).read_text().strip() == "staging"


def test_a_run_on_another_environments_instance_fails_before_any_step(
    staging: Path, tmp_path
) -> None:
    (staging / settings.INSTANCE_MARKER).write_text("prod\n")
    result = _run_with_the_lake(tmp_path)
    assert not result.success
    assert "is the prod environment's Dagster instance" in str(result.all_events)


def test_dg_check_defs_marks_the_instance(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "NLP_ENV": "staging", "DAGSTER_HOME": str(home),
           "NLP_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    for variable in settings.ENVIRONMENT_VARIABLES.values():
        env.pop(variable, None)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "check", "defs"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (home / settings.INSTANCE_MARKER).read_text().strip() == "staging"


def test_the_step_pod_profile_is_never_read_relative_to_the_current_directory(
    monkeypatch,
) -> None:
    monkeypatch.chdir(REPO)  # where deploy/k8s/executor.yaml would be found relatively
    monkeypatch.delenv("NLP_K8S_EXECUTOR_CONFIG", raising=False)
    with pytest.raises(FileNotFoundError, match="set NLP_K8S_EXECUTOR_CONFIG"):
        load_k8s_profile()
    monkeypatch.setenv("NLP_K8S_EXECUTOR_CONFIG", "deploy/k8s/executor.yaml")
    with pytest.raises(FileNotFoundError, match="not an absolute path"):
        load_k8s_profile()
    monkeypatch.setenv("NLP_K8S_EXECUTOR_CONFIG", str(REPO / "deploy/k8s/executor.yaml"))
    assert "pools" in load_k8s_profile()
