"""A Spark standalone cluster on this machine: one master and N workers, each its own JVM.

Started with the `spark-class` launcher that ships in the pyspark wheel
(`org.apache.spark.deploy.master.Master`, `org.apache.spark.deploy.worker.Worker`) on free
127.0.0.1 ports, for the tests and the engine benchmark. Every worker starts its own executor
JVM per application, and each executor its own Python workers, so the Spark engine really
crosses process boundaries: what a kernel needs must travel in its closure or be rebuilt from
config on the worker (see `nlp_assets.engines.workers`).

    with standalone_cluster(workers=2) as master:    # "spark://127.0.0.1:PORT"
        SparkResource(master=master).spark_session ...

or from a shell: `python -m dev.spark_cluster --workers 2` prints the master URL
and keeps the cluster up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

#: The repository root: put on the workers' PYTHONPATH so executors' Python workers import the
#: tests' and benchmarks' own modules (`nlp_assets` comes from the interpreter's install).
REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def spark_home() -> Path:
    """The Spark distribution inside the pyspark wheel (jars, bin/spark-class)."""
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def master_state(web_port: int, timeout: float = 2.0) -> dict:
    """The master's JSON status (`/json` on its web UI): workers, their state, applications."""
    with urllib.request.urlopen(f"http://{HOST}:{web_port}/json", timeout=timeout) as reply:
        return json.loads(reply.read())


def alive_workers(state: dict) -> int:
    return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the process group (the JVM, its executors and their Python workers), then
    SIGKILL to whatever is left after `grace` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # Executors and Python workers may outlive the JVM that started them: kill the group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)


@contextlib.contextmanager
def standalone_cluster(
    workers: int = 2,
    cores_per_worker: int = 1,
    memory: str = "2g",
    python: str = sys.executable,
    work_dir: Path | None = None,
    timeout: float = 120.0,
) -> Iterator[str]:
    """Start a master and `workers` workers, wait until every worker is registered, yield the
    master URL, and stop every process (and its children) on exit, even after an error.

    `python` is what executors run as Python workers (PYSPARK_PYTHON in the workers'
    environment; the driver's `PYSPARK_PYTHON` / `spark.pyspark.python` still wins per app).
    Logs of each JVM are under `work_dir` (a temporary folder, removed after, when not given).
    """
    if workers < 1:
        raise ValueError("a cluster needs at least one worker")
    own_dir = work_dir is None
    root = (
        Path(tempfile.mkdtemp(prefix="spark-standalone-")) if work_dir is None else Path(work_dir)
    )
    root.mkdir(parents=True, exist_ok=True)
    launcher = spark_home() / "bin" / "spark-class"
    # Daemons have their own heap (the master and the worker need little of it).
    env = _spark_env(root, python) | {"SPARK_DAEMON_MEMORY": "256m"}
    processes: list[subprocess.Popen] = []
    logs: list[Path] = []

    def launch(name: str, args: list[str]) -> subprocess.Popen:
        log = root / f"{name}.log"
        logs.append(log)
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(launcher), *args],
                env=env,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        processes.append(process)
        return process

    try:
        port, web_port = free_port(), free_port()
        master_url = f"spark://{HOST}:{port}"
        launch(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                *("--host", HOST, "--port", str(port), "--webui-port", str(web_port)),
            ],
        )
        for i in range(workers):
            worker_dir = root / f"worker-{i}"
            worker_dir.mkdir(exist_ok=True)
            launch(
                f"worker-{i}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    *("--host", HOST, "--port", str(free_port())),
                    *("--webui-port", str(free_port())),
                    *("--cores", str(cores_per_worker), "--memory", memory),
                    *("--work-dir", str(worker_dir)),
                    master_url,
                ],
            )
        _wait_for_workers(web_port, workers, processes, logs, timeout)
        yield master_url
    finally:
        for process in reversed(processes):
            _stop(process)
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def _spark_env(root: Path, python: str) -> dict[str, str]:
    """The environment of Spark processes whose logs and pid files go under `root` and whose
    Python workers run as `python`, with the project importable."""
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return os.environ | {
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": HOST,
        "SPARK_LOG_DIR": str(root / "logs"),
        "SPARK_PID_DIR": str(root),
        "PYSPARK_PYTHON": python,
        "PYTHONPATH": python_path,
    }


def _wait_for_workers(
    web_port: int,
    workers: int,
    processes: list[subprocess.Popen],
    logs: list[Path],
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    alive = 0
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                raise RuntimeError(
                    f"{log.stem} exited with {process.returncode} while the cluster started:\n"
                    + _tail(log)
                )
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
            alive = alive_workers(master_state(web_port))
            if alive >= workers:
                return
        time.sleep(0.5)
    raise TimeoutError(
        f"{alive} of {workers} Spark workers registered within {timeout:.0f}s; master log:\n"
        + _tail(logs[0])
    )


@contextlib.contextmanager
def connect_server(
    master: str = "local[2]",
    python: str = sys.executable,
    work_dir: Path | None = None,
    parallelism: int = 2,
    timeout: float = 180.0,
) -> Iterator[str]:
    """A Spark Connect server (`sbin/start-connect-server.sh --wait`, the wheel's own) driving
    `master`, on a free 127.0.0.1 port; yields its `sc://127.0.0.1:PORT` URL and stops it (and
    its Python workers) on exit. Its UDFs run in `python`, with the project importable."""
    own_dir = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="spark-connect-")) if work_dir is None else Path(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = _spark_env(root, python)
    settings = {
        "spark.connect.grpc.binding.address": HOST,
        "spark.connect.grpc.binding.port": str(port),
        "spark.default.parallelism": str(parallelism),
        "spark.sql.shuffle.partitions": "8",
        "spark.ui.enabled": "false",
    }
    log = root / "connect-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(spark_home() / "sbin" / "start-connect-server.sh"),
                "--wait",  # in the foreground: this process is the server's JVM
                *("--master", master),
                *(arg for key, value in settings.items() for arg in ("--conf", f"{key}={value}")),
            ],
            env=env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"Spark Connect server exited with {process.returncode}:\n{_tail(log)}"
                )
            with contextlib.suppress(OSError):
                socket.create_connection((HOST, port), timeout=1).close()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"Spark Connect server not up in {timeout:.0f}s:\n{_tail(log)}")
            time.sleep(0.5)
        yield f"sc://{HOST}:{port}"
    finally:
        _stop(process)
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores-per-worker", type=int, default=1)
    parser.add_argument("--memory", default="2g", help="memory each worker offers (e.g. 2g)")
    parser.add_argument("--work-dir", type=Path, default=None, help="logs and worker folders")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the cluster as Ctrl-C does
    with standalone_cluster(
        args.workers, args.cores_per_worker, args.memory, work_dir=args.work_dir
    ) as master:
        print(master, flush=True)
        print(f"NLP_SPARK_MASTER={master}  (Ctrl-C stops the master and its workers)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
