"""Environments side by side (docs/environments.md): `NLP_ENV` = dev | staging | prod selects
one resource set, and no environment reads or writes another's lake folders, Kafka topics,
warehouse schema, model-cache keys or Dagster instance.

The definitions are loaded the way Dagster loads them, in a fresh process per environment
(module-level sensors and topic assets are built at import), with a DAGSTER_HOME of its own.
The isolation tests write under one environment with the real services (Postgres schemas in
one database, one Redis, one broker) and read under the others.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest
import redis
import yaml
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg2 import sql

from nlp_assets import settings
from nlp_assets.definitions import all_assets, build_resources  # loaded as the suite runs
from nlp_assets.read import read_documents
from nlp_assets.resources.model_cache import CacheStats, cached_compute, text_key
from nlp_assets.resources.warehouse import warehouse_from_env
from nlp_assets.settings import InvalidEnvironment
from nlp_assets_tests.kafka_broker import Broker
from nlp_assets_tests.postgres_db import temp_database, url_for

REPO = Path(__file__).parents[1]
DAY = "2026-03-02"
REDIS_URL = "redis://127.0.0.1:6379/0"
#: Variables a test run may carry that would override an environment's own values.
_CLEARED = (
    "NLP_ENV",
    *settings.ENVIRONMENT_VARIABLES.values(),
    "NLP_KAFKA_TOPICS",
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_PASSWORD",
    "KAFKA_BOOTSTRAP_SERVERS",
    "DAGSTER_HOME",
)

PRELUDE = """
import json
from nlp_assets.definitions import defs

def out(value):
    print("RESULT " + json.dumps(value))
"""

DESCRIBE = """
from nlp_assets import settings
resources = defs.resources
topics = [s.metadata["topic"] for s in defs.assets if getattr(s, "kinds", None) == {"kafka"}]
out({
    "lake": resources["lake"].root,
    "io_manager_lake": resources["lake_io_manager"].lake.root,
    "landing": resources["landing"].root,
    "reports": resources["report_folder"].root,
    "schema": resources["warehouse"].schema_name,
    "cache_namespace": resources["model_cache"].namespace,
    "topics": topics,
    "dead_letter_topics": [t + resources["kafka"].dead_letter_suffix for t in topics],
    "kafka_sensors": sorted(s.name for s in defs.sensors if s.name.startswith("kafka_")),
    "dagster_home": settings.environment().dagster_home,
})
"""


def _environ(name: str | None, root: Path, **extra: str) -> dict[str, str]:
    """A process environment for `name` (None: NLP_ENV unset) with its own DAGSTER_HOME and
    nothing inherited that could override its values."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env |= {"NLP_DATA_DIR": str(root / "data"), "HF_HUB_OFFLINE": "1"}
    if name is not None:
        env["NLP_ENV"] = name
    env["DAGSTER_HOME"] = str(root / "homes" / (name or "unset"))
    if name == "prod":  # prod names its folders: nothing is a default in production
        env |= {
            "NLP_LAKE_DIR": str(root / "prod" / "lake"),
            "NLP_LANDING_DIR": str(root / "prod" / "landing"),
            "NLP_REPORTS_DIR": str(root / "prod" / "reports"),
        }
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    return env | extra


def _run(env: dict[str, str], code: str, *, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _result(env: dict[str, str], code: str) -> Any:
    """What the code printed with `out(...)` after loading the definitions in `env`."""
    done = _run(env, PRELUDE + textwrap.dedent(code))
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def _overlap(a: str, b: str) -> bool:
    """Whether two folders or URLs are the same or one holds the other."""
    a, b = (x.rstrip("/") if "://" in x else str(Path(x).resolve()) for x in (a, b))
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


# -- loading ------------------------------------------------------------------------------------


def test_each_environment_loads_its_own_resource_set_disjoint_from_the_others(
    tmp_path: Path,
) -> None:
    found = {name: _result(_environ(name, tmp_path), DESCRIBE) for name in settings.ENVIRONMENTS}
    data = tmp_path / "data"
    # dev is what the project always was; staging lives beside it; prod is what it was told
    assert found["dev"] | {"dagster_home": None} == {
        "lake": str(data / "lake"),
        "io_manager_lake": str(data / "lake"),
        "landing": str(data / "landing"),
        "reports": str(data / "reports"),
        "schema": "nlp",
        "cache_namespace": "nlp",
        "topics": ["nlp-documents"],
        "dead_letter_topics": ["nlp-documents.dlq"],
        "kafka_sensors": ["kafka_nlp_documents_sensor"],
        "dagster_home": None,
    }
    assert found["staging"]["lake"] == str(data / "staging" / "lake")
    assert found["staging"]["topics"] == ["staging.nlp-documents"]
    assert (found["staging"]["schema"], found["staging"]["cache_namespace"]) == (
        "nlp_staging",
        "nlp-staging",
    )
    assert found["prod"]["lake"] == str(tmp_path / "prod" / "lake")
    assert found["prod"]["dead_letter_topics"] == ["prod.nlp-documents.dlq"]
    assert (found["prod"]["schema"], found["prod"]["cache_namespace"]) == ("nlp_prod", "nlp-prod")

    names = list(found)
    for i, a in enumerate(names):
        mine = found[a]
        assert mine["io_manager_lake"] == mine["lake"]
        assert mine["dagster_home"] == str(tmp_path / "homes" / a)
        for b in names[i + 1 :]:
            theirs = found[b]
            for key in ("lake", "landing", "reports"):
                for other in ("lake", "landing", "reports"):
                    assert not _overlap(mine[key], theirs[other]), (a, key, b, other)
            assert mine["schema"] != theirs["schema"]
            # cache keys are `<namespace>:<model>:<version>:<sha256>`: neither prefix is the other's
            mine_keys, their_keys = mine["cache_namespace"] + ":", theirs["cache_namespace"] + ":"
            assert not mine_keys.startswith(their_keys) and not their_keys.startswith(mine_keys)
            assert not set(mine["topics"] + mine["dead_letter_topics"]) & set(
                theirs["topics"] + theirs["dead_letter_topics"]
            )
            assert not set(mine["kafka_sensors"]) & set(theirs["kafka_sensors"])
            assert mine["dagster_home"] != theirs["dagster_home"]
    # loading the definitions writes nothing into an instance: a run's start or `dg check defs`
    # marks it (test_settings.py)
    for name in settings.ENVIRONMENTS:
        assert not (tmp_path / "homes" / name / settings.INSTANCE_MARKER).exists()


def test_an_unknown_environment_fails_loading_with_a_clear_message(tmp_path: Path) -> None:
    """What a user runs: `dagster definitions validate`, with a misspelt NLP_ENV."""
    env = _environ(None, tmp_path) | {"NLP_ENV": "production"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w",
         str(REPO / "workspace.yaml")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert (
        "NLP_ENV='production' is not an environment: choose one of dev, staging, prod"
        in done.stdout + done.stderr
    )


def test_prod_refuses_to_load_with_dev_defaults_for_its_folders(tmp_path: Path) -> None:
    env = _environ("prod", tmp_path)
    no_folders = {k: v for k, v in env.items() if k not in ("NLP_LAKE_DIR", "NLP_REPORTS_DIR")}
    done = _run(no_folders, PRELUDE)
    assert done.returncode != 0
    assert (
        "NLP_ENV=prod has no default for NLP_LAKE_DIR, NLP_REPORTS_DIR: set them explicitly"
        in done.stderr
    )


# -- the same rules in-process: `settings` reads the environment at call time, and
# -- `build_resources()` builds the selected environment's resources on each call ---------------


@pytest.fixture
def select(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`select(name, **variables)`: this process now runs as environment `name`, with the
    variables `_environ` gives it (its own DAGSTER_HOME; prod's folders) and nothing else."""
    for variable in _CLEARED:
        monkeypatch.delenv(variable, raising=False)

    def choose(name: str | None, **extra: str) -> settings.Environment:
        for variable in _CLEARED:
            monkeypatch.delenv(variable, raising=False)
        for variable, value in _environ(name, tmp_path, **extra).items():
            if variable in _CLEARED or variable == "NLP_DATA_DIR":
                monkeypatch.setenv(variable, value)
        return settings.environment()

    return choose


def test_unset_nlp_env_is_dev(select) -> None:
    env = select(None)
    assert (env.name, env.warehouse_schema, env.cache_namespace, env.kafka_topic_prefix) == (
        "dev",
        "nlp",
        "nlp",
        "",
    )


def test_prod_refuses_an_unnamed_dagster_instance(select, monkeypatch) -> None:
    env = select("prod")
    monkeypatch.delenv("DAGSTER_HOME")
    with pytest.raises(InvalidEnvironment, match="NLP_ENV=prod needs DAGSTER_HOME set"):
        settings.check_instance(settings.environment())
    settings.check_instance(env)  # with its own DAGSTER_HOME: accepted


def test_an_instance_marked_by_staging_is_refused_by_prod_and_dev(select, monkeypatch) -> None:
    staging = select("staging")
    settings.check_instance(staging)  # what a run's start and `dg check defs` do: marks it
    home = staging.dagster_home
    assert home is not None
    assert (Path(home) / settings.INSTANCE_MARKER).read_text().strip() == "staging"
    for name in ("prod", "dev"):
        select(name)
        monkeypatch.setenv("DAGSTER_HOME", home)
        with pytest.raises(InvalidEnvironment) as refused:
            settings.check_instance(settings.environment())
        assert str(refused.value) == (
            f"DAGSTER_HOME={home} is the staging environment's Dagster instance "
            f"({Path(home) / settings.INSTANCE_MARKER} says so); NLP_ENV={name} needs its own"
        )


@pytest.mark.parametrize(
    ("name", "variable", "value", "message"),
    [
        ("prod", "NLP_WAREHOUSE_SCHEMA", "nlp_staging", "the staging environment's"),
        ("staging", "NLP_WAREHOUSE_SCHEMA", "nlp", "the dev environment's"),
        ("staging", "NLP_CACHE_NAMESPACE", "nlp-prod", "the prod environment's"),
        ("dev", "NLP_CACHE_NAMESPACE", "nlp-staging", "the staging environment's"),
        ("prod", "NLP_KAFKA_TOPIC_PREFIX", "staging.", "the staging environment's"),
        ("staging", "NLP_LAKE_DIR", "{data}/lake", "overlaps the dev environment's lake folder"),
        ("prod", "NLP_LANDING_DIR", "{data}/staging", "overlaps the staging environment's"),
        ("staging", "NLP_CACHE_NAMESPACE", "nlp:staging", "':' separates the parts"),
    ],
)
def test_a_value_of_another_environment_is_refused(
    select, monkeypatch, tmp_path: Path, name: str, variable: str, value: str, message: str
) -> None:
    select(name)
    monkeypatch.setenv(variable, value.format(data=tmp_path / "data"))
    with pytest.raises(InvalidEnvironment, match=re.escape(message)):
        settings.environment()


def test_topic_names_are_given_without_an_environment_prefix(select, monkeypatch) -> None:
    select("staging", NLP_KAFKA_TOPICS="reviews:5,tweets")
    assert settings.kafka_topics() == [("staging.reviews", 5), ("staging.tweets", 0)]
    # dev has no prefix: it must not be able to name prod's topic
    select("dev", NLP_KAFKA_TOPICS="prod.reviews")
    with pytest.raises(InvalidEnvironment, match=r"starts with the prod prefix 'prod\.'"):
        settings.kafka_topics()


# -- isolation with the real services --------------------------------------------------------------


def _land(landing: str, name: str) -> None:
    folder = Path(landing) / DAY
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"id": f"{name}-{i}", "text": f"A {name} review, number {i}: a very good film."})
        for i in range(3)
    ]
    (folder / "reviews.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _materialise(env: settings.Environment) -> list[str]:
    """raw_text, cleaned_text and warehouse_documents of DAY with the environment's resources,
    recorded in its instance; the lake paths written."""
    settings.check_instance(env)
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            all_assets,
            selection=["raw_text", "cleaned_text", "warehouse_documents"],
            resources=build_resources(),
            partition_key=DAY,
            instance=instance,
        )
    assert result.success
    return [
        str(e.materialization.metadata["path"].value)
        for e in result.get_asset_materialization_events()
        if "path" in e.materialization.metadata
    ]


def _read_back() -> dict[str, Any]:
    """What the selected environment sees of DAY: the downstream reader (its lake), its
    warehouse schema, and the runs of its instance."""
    documents = read_documents(DAY)
    warehouse = warehouse_from_env().process_config_and_initialize()  # EnvVar resolved
    conn = warehouse.connect()
    with conn, conn.cursor() as cursor:
        cursor.execute(
            sql.SQL("SELECT text FROM {} WHERE ingest_date = %s").format(
                sql.Identifier(warehouse.schema_name, "documents")
            ),
            [DAY],
        )
        rows = sorted(r[0] for r in cursor.fetchall())
    conn.close()
    with dg.DagsterInstance.get() as instance:
        run_ids = sorted(r.run_id for r in instance.get_runs())
    return {
        "lake_texts": sorted(documents["text"].to_list()) if documents.height else [],
        "warehouse_texts": rows,
        "run_ids": run_ids,
    }


@pytest.mark.postgres
def test_staging_and_prod_materialise_the_same_day_and_each_reads_back_only_its_own(
    select, tmp_path: Path
) -> None:
    """Lake folders, warehouse schemas (in one database, as on a shared cluster) and Dagster
    instances: both environments write the same day, each reads back only its own documents."""
    with temp_database("nlp_envs") as database:
        url = url_for(database)
        written, lakes = {}, {}
        for name in ("staging", "prod"):
            env = select(name, DATABASE_URL=url)
            _land(env.landing_dir, name)
            written[name] = _materialise(env)
            lakes[name] = env.lake_dir
        read = {}
        for name in ("staging", "prod"):
            select(name, DATABASE_URL=url)
            read[name] = _read_back()

        for name, other in (("staging", "prod"), ("prod", "staging")):
            texts = read[name]["lake_texts"]
            assert len(texts) == 3
            assert all(f"A {name} review" in t and other not in t for t in texts), texts
            assert read[name]["warehouse_texts"] == texts
            assert len(read[name]["run_ids"]) == 1  # its own run, in its own instance
            assert read[name]["run_ids"] != read[other]["run_ids"]
            assert written[name]
            for path in written[name]:  # nothing written under the other's lake
                assert _overlap(path, lakes[name]) and not _overlap(path, lakes[other]), path
        # the database holds both schemas, each with only its environment's rows
        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cursor:
            for name, schema in (("staging", "nlp_staging"), ("prod", "nlp_prod")):
                cursor.execute(f"SELECT text FROM {schema}.documents")
                assert sorted(r[0] for r in cursor.fetchall()) == read[name]["warehouse_texts"]
            cursor.execute("SELECT to_regclass('nlp.documents')")
            assert cursor.fetchone() == (None,)  # dev's schema untouched
        conn.close()


@pytest.mark.redis
def test_model_cache_entries_written_in_one_environment_are_not_read_in_another(select) -> None:
    """One Redis for all: each environment computes the same texts itself (never a hit on
    another's entry), reads its own back, and its keys carry only its own namespace."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # no Redis: the test fails here
    texts = [f"environment probe {uuid.uuid4().hex} {i}" for i in range(3)]
    namespaces = {}
    try:
        for name in settings.ENVIRONMENTS:
            select(name, REDIS_URL=REDIS_URL)
            cache = build_resources()["model_cache"]
            namespaces[name] = cache.namespace
            for expected_hits in (0, 3):  # first computed, then read back
                stats = CacheStats()
                values = cached_compute(
                    texts,
                    lambda indices, name=name: [f"{name}:{texts[i]}" for i in indices],
                    cache=cache.backend(),
                    namespace=cache.namespace,
                    model="env-probe",
                    version="1",
                    encode=str.encode,
                    decode=bytes.decode,
                    stats=stats,
                )
                assert (stats.hits, stats.misses, stats.errors) == (
                    expected_hits,
                    3 - expected_hits,
                    0,
                ), name
                assert values == [f"{name}:{t}" for t in texts]
        hashes = {text_key(t) for t in texts}
        ours = {
            k.decode()
            for k in client.scan_iter(match="*:env-probe:1:*", count=10_000)
            if k.decode().rsplit(":", 1)[1] in hashes
        }
        assert namespaces == {"dev": "nlp", "staging": "nlp-staging", "prod": "nlp-prod"}
        by_env = {n: {k for k in ours if k.startswith(ns + ":")} for n, ns in namespaces.items()}
        assert all(len(keys) == 3 for keys in by_env.values()), by_env
        assert set().union(*by_env.values()) == ours  # no key outside the three namespaces
    finally:
        if leftover := list(client.scan_iter(match="*:env-probe:1:*", count=10_000)):
            client.delete(*leftover)
        client.close()


TICK = """
import dagster as dg
from dev.kafka_drain import evaluate_tick
sensor = next(s for s in defs.sensors if s.name.startswith("kafka_"))
with dg.instance_for_test() as instance:
    outcome = evaluate_tick(sensor, instance=instance, cursor=None, definitions=defs)
out({
    "sensor": sensor.name,
    "topics": sorted({r.tags["nlp/kafka_topic"] for r in outcome.requests}),
    "requests": len(outcome.requests),
    "skip": outcome.skip_reason,
})
"""


@pytest.mark.kafka
def test_each_environments_sensor_reads_only_its_own_topic(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    base = f"env-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    topics = {"staging": f"staging.{base}", "prod": f"prod.{base}"}
    futures = admin.create_topics([NewTopic(t, num_partitions=1) for t in topics.values()])
    for future in futures.values():
        future.result(timeout=20)
    kafka_broker.topics.extend(topics.values())
    kafka_broker.produce(topics["staging"], [{"id": str(i), "text": f"t{i}"} for i in range(4)])

    seen = {}
    for name in ("staging", "prod", "dev"):
        env = _environ(
            name, tmp_path, KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap, NLP_KAFKA_TOPICS=base
        )
        seen[name] = _result(env, TICK)
    assert seen["staging"]["topics"] == [topics["staging"]]
    assert seen["staging"]["requests"] == 1  # the four messages, one range
    assert seen["prod"]["requests"] == 0  # prod's topic is empty: staging's messages unseen
    assert f"no new messages on {topics['prod']}" in seen["prod"]["skip"]
    assert seen["dev"]["requests"] == 0  # dev's topic (no prefix) does not exist
    assert f"topic {base} does not exist" in seen["dev"]["skip"]


# -- the Helm overlays ----------------------------------------------------------------------------

HELM = REPO / "deploy" / "helm"
#: The env entries of the code location an overlay may change (or drop).
#: OTEL_RESOURCE_ATTRIBUTES names the environment its traces come from (deployment.environment).
PER_ENVIRONMENT = {
    "NLP_ENV",
    "NLP_SENTIMENT_AB_SHARE",
    "OTEL_RESOURCE_ATTRIBUTES",
    *settings.ENVIRONMENT_VARIABLES.values(),
}


def _helm_merge(base: Any, overlay: Any) -> Any:
    """`helm -f base -f overlay`: maps merge key by key, anything else (lists too) replaces."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {k: _helm_merge(base[k], v) if k in base else v for k, v in overlay.items()} | {
            k: v for k, v in base.items() if k not in overlay
        }
    return overlay


def _key_paths(values: Any, prefix: str = "") -> set[str]:
    if not isinstance(values, dict):
        return set()
    return {f"{prefix}{k}" for k in values} | {
        p for k, v in values.items() for p in _key_paths(v, f"{prefix}{k}.")
    }


#: What an overlay may set: the code location (a list entry, so whole) and the instance database.
OVERLAY_KEYS = {
    "dagster-user-deployments",
    "dagster-user-deployments.deployments",
    "postgresql",
    "postgresql.postgresqlDatabase",
}


def _values(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """values.yaml, and values.yaml with the environment's overlay applied. The overlay sets
    only OVERLAY_KEYS, each a key of values.yaml."""
    base = yaml.safe_load((HELM / "values.yaml").read_text(encoding="utf-8"))
    overlay = yaml.safe_load((HELM / f"values-{name}.yaml").read_text(encoding="utf-8"))
    assert _key_paths(overlay) <= OVERLAY_KEYS & _key_paths(base), _key_paths(overlay)
    return base, _helm_merge(base, overlay)


def _code_location(values: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


@pytest.mark.parametrize("name", ["staging", "prod"])
def test_helm_overlay_changes_only_the_environment_of_the_code_location(name: str) -> None:
    """Helm replaces lists, so an overlay repeats the code location whole: everything but the
    per-environment env entries must still be values.yaml's (security context, probes, volumes,
    secrets, image), and NLP_ENV must name the environment."""
    base, merged = _values(name)
    mine, theirs = _code_location(merged), _code_location(base)

    def without_environment(deployment: dict[str, Any]) -> dict[str, Any]:
        env = [e for e in deployment["env"] if e["name"] not in PER_ENVIRONMENT]
        return deployment | {"env": env}

    assert without_environment(mine) == without_environment(theirs)
    env = {e["name"]: e.get("value") for e in mine["env"]}
    assert env["NLP_ENV"] == name
    assert f"deployment.environment={name}" in env["OTEL_RESOURCE_ATTRIBUTES"].split(",")


def test_helm_overlays_give_each_environment_a_resource_set_of_its_own(select, monkeypatch) -> None:
    """The values each overlay's pods get, loaded by `settings.environment()`: both are valid
    (prod's folders are explicit) and share no lake, landing or report folder, topic prefix,
    warehouse schema, cache namespace or instance database."""
    found = {}
    for name in ("staging", "prod"):
        _, merged = _values(name)
        select(None)
        for entry in _code_location(merged)["env"]:
            if "value" in entry:
                monkeypatch.setenv(entry["name"], str(entry["value"]))
        monkeypatch.setenv("DAGSTER_HOME", merged["global"]["dagsterHome"])
        env = settings.environment()
        assert env.name == name
        found[name] = asdict(env) | {"instance": merged["postgresql"]["postgresqlDatabase"]}
    staging, prod = found["staging"], found["prod"]
    for folder in ("lake_dir", "landing_dir", "reports_dir"):
        for other in ("lake_dir", "landing_dir", "reports_dir"):
            assert not _overlap(staging[folder], prod[other]), (folder, other)
    for key in ("kafka_topic_prefix", "warehouse_schema", "cache_namespace", "instance"):
        assert staging[key] != prod[key], key
    assert (prod["kafka_topic_prefix"], prod["warehouse_schema"], prod["cache_namespace"]) == (
        "prod.",
        "nlp_prod",
        "nlp-prod",
    )


def test_the_api_reads_and_meters_in_its_own_environments_schema_and_redis_keys(
    select, monkeypatch
) -> None:
    """The API process takes NLP_ENV too: a staging API never reads dev's warehouse or keys."""
    from nlp_assets.api.config import ApiSettings

    for var in ("NLP_WAREHOUSE_SCHEMA", "NLP_API_KEYS_SCHEMA", "NLP_API_REDIS_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    seen = {}
    for name in ("dev", "staging", "prod"):
        select(name)
        api = ApiSettings.from_env()
        seen[name] = (api.warehouse_schema, api.keys_schema, api.redis_prefix)
    assert seen["dev"] == ("nlp", "nlp_api", "nlp:api")  # unchanged for existing deployments
    assert seen["staging"] == ("nlp_staging", "nlp_api_staging", "nlp-staging:api")
    assert seen["prod"] == ("nlp_prod", "nlp_api_prod", "nlp-prod:api")
