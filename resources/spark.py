"""Spark for the stage kernels: a lazily started SparkSession built on dagster-pyspark.

`master` is `local[*]` by default; any `spark://`, `k8s://` or `yarn` master works by
configuration, `sc://host:port` makes this a Spark Connect client (docs/spark.md), and
`spark_config` is passed through to the session builder (nested keys are flattened to dots).
The session starts on first use, so a run whose stages all stay on the local engine never
starts a JVM, and it is stopped when the run's resources are torn down
(unless it was already running when this resource asked for it: then its owner stops it).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from dagster_spark.utils import flatten_dict
from pydantic import Field, PrivateAttr

from nlp_assets import settings as nlp_settings

#: Settings that make small local runs start quickly; `spark_config` overrides any of them.
LOCAL_DEFAULTS: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def worker_python() -> str:
    """The Python the Spark workers run: the one running this code unless PYSPARK_PYTHON says
    otherwise (workers must import `nlp_assets`, which the project's venv has)."""
    return os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


#: What executors need to reach the model server (the token: Spark's default
#: `spark.redaction.regex` hides it in the UI and event logs).
MODEL_SERVER_VARIABLES = (
    "NLP_MODEL_SERVER_URL",
    "NLP_MODEL_SERVER_WAIT_SECONDS",
    "NLP_MODEL_SERVER_TOKEN",
)


def model_server_env() -> dict[str, str]:
    """`spark.executorEnv.*` for the model server variables set here: the executors' Python
    workers then call the same server (on Kubernetes, the node-local one) as the driver."""
    return {
        f"spark.executorEnv.{name}": os.environ[name]
        for name in MODEL_SERVER_VARIABLES
        if os.environ.get(name)
    }


class SparkResource(LazyPySparkResource):
    """A SparkSession for the Spark engine of the stage kernels."""

    master: str = Field(
        default="local[*]",
        description="Spark master: local[N], spark://host:7077, k8s://https://host, yarn, or "
        "sc://host:15002 (a Spark Connect server).",
    )
    app_name: str = Field(default="nlp-assets", description="Spark application name.")
    spark_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Spark settings passed to the session builder, e.g. "
        '{"spark.executor.memory": "4g"} (nested keys are joined with dots).',
    )
    _owns_session: bool = PrivateAttr(default=False)

    def _init_session(self) -> None:
        if self._spark_session is not None:
            return
        from pyspark.sql import SparkSession

        worker_python()
        if self.master.startswith("sc://"):  # Spark Connect: a client of a server's session
            builder = SparkSession.builder.remote(self.master).appName(self.app_name)
            for key, value in flatten_dict(self.spark_config):  # runtime (SQL) settings only
                builder = builder.config(key, str(value))
            self._spark_session = builder.getOrCreate()
            self._owns_session = True  # stopping it closes this client, not the server
            return
        already_running = SparkSession.getActiveSession() is not None
        builder = SparkSession.builder.master(self.master).appName(self.app_name)
        settings = dict(LOCAL_DEFAULTS) if self.master.startswith("local") else {}
        settings |= model_server_env()
        settings |= {key: str(value) for key, value in flatten_dict(self.spark_config)}
        for key, value in settings.items():
            builder = builder.config(key, value)
        self._spark_session = builder.getOrCreate()
        self._owns_session = not already_running

    @property
    def started(self) -> bool:
        return self._spark_session is not None

    def stop(self) -> None:
        """Stop the session if this resource started it."""
        if self._spark_session is not None and self._owns_session:
            self._spark_session.stop()
        self._spark_session = None
        self._owns_session = False

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.stop()


def spark_from_env() -> SparkResource:
    """`NLP_SPARK_MASTER` (default local[*]) and `NLP_SPARK_CONF` (a JSON object of settings)."""
    conf = nlp_settings.spark_conf()
    try:
        settings = json.loads(conf) if conf else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"NLP_SPARK_CONF is not a JSON object: {error}") from error
    if not isinstance(settings, dict):
        raise ValueError("NLP_SPARK_CONF must be a JSON object of Spark settings")
    return SparkResource(master=nlp_settings.spark_master(), spark_config=settings)
