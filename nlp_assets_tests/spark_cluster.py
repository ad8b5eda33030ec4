"""The `spark` tests' engines: Spark `local[2]` (one JVM) and a standalone cluster on this
machine (a master and two workers, each its own JVM with its own executors and Python
workers; `dev.spark_cluster`).

`spark_master` is parametrised with ids "local" and "cluster": a test (or module fixture) that
asks for it runs once per engine. pytest groups the tests by engine, so the cluster starts once
per session (`standalone_master`, on first use) and only one SparkSession is alive at a time
(each module stops its own before the next engine's start).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dev.spark_cluster import connect_server, standalone_cluster
from nlp_assets.resources.spark import SparkResource

LOCAL_MASTER = "local[2]"
#: Two workers of one core each: the same parallelism as local[2], across processes.
CLUSTER_WORKERS = 2


@pytest.fixture(scope="session")
def standalone_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A master and two one-core workers for the whole session, stopped at its end."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    with standalone_cluster(
        workers=CLUSTER_WORKERS,
        cores_per_worker=1,
        memory="2g",
        work_dir=tmp_path_factory.mktemp("spark_standalone"),
    ) as master:
        yield master


@pytest.fixture(scope="session", params=["local", "cluster"])
def spark_master(request: pytest.FixtureRequest) -> str:
    """The master URL of the engine under test: local[2], then the standalone cluster."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if request.param == "local":
        return LOCAL_MASTER
    return request.getfixturevalue("standalone_master")


def spark_resource(master: str, app_name: str) -> SparkResource:
    """The SparkResource the tests run on `master` (the same resource the runs use)."""
    return SparkResource(master=master, app_name=app_name, spark_config=cluster_settings(master))


def cluster_settings(master: str) -> dict[str, str]:
    """Settings for small test inputs on the cluster (local masters get LOCAL_DEFAULTS)."""
    if master.startswith("local"):
        return {}
    return {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "8",
        # The executors of both workers must be up before a stage is planned, so tasks are
        # spread over both and defaultParallelism counts both workers' cores.
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
        "spark.cores.max": str(CLUSTER_WORKERS),  # what the ratio above counts against
        "spark.executor.memory": "1g",
    }


@pytest.fixture(scope="module")
def connect_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark Connect server (the wheel's start-connect-server.sh) over local[2], for one
    module: yields its sc:// URL."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    with connect_server(master=LOCAL_MASTER, work_dir=tmp_path_factory.mktemp("connect")) as url:
        yield url
