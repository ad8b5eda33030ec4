"""The cost of traces, off against on, side by side in one run.

Traces on means what production does: the SDK installed, every span exported over OTLP/gRPC
(batched) to a collector, here `dev.otlp_receiver` in its own process on 127.0.0.1 (on this
machine's cores, as a node-local collector would be).

- **Micro-batch**: the part stages (raw text to predictions) of a 300-document part, run by
  `dg.materialize` in a child process (one process per mode and round, models loaded once per
  process and warmed on a first part that is not counted). Every part's texts are new (unique
  sentences of the sample corpus), so the model cache never hits and the run is model-bound as
  in production. Rounds alternate off/on, then on/off; the figure is the median run time of
  each mode.
- **API submit**: `POST /v1/documents` of one document, and of 100, to two uvicorn servers
  started side by side (the landing sink), one with traces off and one on, requests alternating
  between them; p50 of each.
- **Off costs nothing measurable**: a span opened and closed with the SDK not installed,
  nanoseconds per span, times the spans a micro-batch opens.

Prints the load average: a shared 2-core machine moves single figures.

Run: `python -m bench.tracing [--docs 300] [--rounds 3] [--requests 300]`
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).parents[1]


def _otel(endpoint: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


# --- micro-batch -------------------------------------------------------------------------------
def child(args: argparse.Namespace) -> None:
    """Run `--parts` micro-batches of `--docs` new texts each; print one JSON line per run."""
    from datetime import date, timedelta

    import dagster as dg

    from bench.streaming import text_pool, unique_texts
    from nlp_assets.definitions import all_assets, build_resources
    from nlp_assets.stages import stage_names
    from nlp_assets.stages.common import DAY_SCOPE, PIPELINE

    root = Path(args.root)
    texts = unique_texts(args.docs * (args.parts + 1) * (args.offset + 1), text_pool())
    texts = texts[args.offset * args.docs * (args.parts + 1) :]
    resources = build_resources(
        lake_dir=str(root / "lake"),
        landing_dir=str(root / "landing"),
        reports_dir=str(root / "reports"),
    )
    part_stages = [s for s in stage_names(PIPELINE) if s not in set(stage_names(DAY_SCOPE))]
    with dg.instance_for_test() as instance:
        for i in range(args.parts + 1):
            day = (
                date(2026, 1, 1) + timedelta(days=args.offset * (args.parts + 1) + i)
            ).isoformat()
            folder = root / "landing" / day
            folder.mkdir(parents=True)
            chunk = texts[i * args.docs : (i + 1) * args.docs]
            (folder / "part.jsonl").write_text(
                "".join(json.dumps({"id": n, "text": t}) + "\n" for n, t in enumerate(chunk))
            )
            started = time.perf_counter()
            result = dg.materialize(
                all_assets,
                selection=part_stages,
                partition_key=day,
                instance=instance,
                resources=resources,
            )
            seconds = time.perf_counter() - started
            assert result.success
            print(json.dumps({"warm": i == 0, "seconds": seconds}), flush=True)
    from nlp_assets import tracing

    tracing.flush()


def micro_batches(args: argparse.Namespace, endpoint: str, trained: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"off": [], "on": []}
    for round_ in range(args.rounds):
        for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                (root / "lake").mkdir()
                subprocess.run(["cp", "-r", str(trained), str(root / "lake")], check=True)
                env = _clean_env() | (_otel(endpoint) if mode == "on" else {})
                offset = round_ * 2 + (mode == "on")
                out = subprocess.run(
                    [
                        *(sys.executable, "-m", "bench.tracing", "--child", "--root", tmp),
                        *("--docs", str(args.docs), "--parts", str(args.parts)),
                        *("--offset", str(offset)),
                    ],
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode:
                    raise RuntimeError(out.stderr[-3000:])
                runs = [json.loads(line) for line in out.stdout.splitlines() if line[:1] == "{"]
                times[mode] += [r["seconds"] for r in runs if not r["warm"]]
                print(f"round {round_ + 1} {mode}: {[round(r['seconds'], 2) for r in runs]}")
    return times


# --- API ---------------------------------------------------------------------------------------
def api_submit(args: argparse.Namespace, endpoint: str) -> dict[str, dict[str, float]]:
    import httpx

    from nlp_assets.api.keys import FileKeyStore
    from nlp_assets_tests.api_server import api_server

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keys = FileKeyStore(root / "keys.json")
        _, key = keys.create("bench", "submitter", channels=["api"])
        base = {
            "NLP_API_KEYS_FILE": str(root / "keys.json"),
            "DATABASE_URL": "",
            "REDIS_URL": "",
            "KAFKA_BOOTSTRAP_SERVERS": "",
            "NLP_API_RATE_PER_SECOND": "100000",
            "NLP_API_RATE_BURST": "100000",
        }
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(_clean_env())
        try:
            with (
                api_server(
                    base | {"NLP_DATA_DIR": f"{tmp}/off", "NLP_LANDING_DIR": f"{tmp}/off/l"},
                    root / "off.log",
                ) as off,
                api_server(
                    base
                    | {"NLP_DATA_DIR": f"{tmp}/on", "NLP_LANDING_DIR": f"{tmp}/on/l"}
                    | _otel(endpoint),
                    root / "on.log",
                ) as on,
            ):
                headers = {"Authorization": f"Bearer {key}"}
                with httpx.Client(timeout=30) as client:
                    for batch in (1, 100):
                        spent: dict[str, list[float]] = {"off": [], "on": []}
                        for i in range(args.requests + 20):
                            for mode, url in (("off", off), ("on", on)):
                                body = [
                                    {"id": f"{mode}-{batch}-{i}-{j}", "text": f"Text {i} {j}."}
                                    for j in range(batch)
                                ]
                                started = time.perf_counter()
                                response = client.post(
                                    f"{url}/v1/documents", json=body, headers=headers
                                )
                                elapsed = time.perf_counter() - started
                                assert response.status_code == 202, response.text
                                if i >= 20:  # warm-up
                                    spent[mode].append(elapsed)
                        out[f"{batch} doc(s)"] = {
                            m: statistics.median(v) * 1000 for m, v in spent.items()
                        }
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return out


def span_cost_off() -> float:
    """ns per span opened and closed with the SDK not installed (in a fresh process)."""
    code = (
        "import timeit\n"
        "from nlp_assets import tracing\n"
        "def one():\n"
        "    with tracing.span('x', {'a': 1}):\n"
        "        pass\n"
        "n = 200000\n"
        "print(min(timeit.repeat(one, number=n, repeat=5)) / n * 1e9)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--parts", type=int, default=3, help="counted runs per process")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    from bench.streaming import train_sentiment_head
    from nlp_assets import settings
    from nlp_assets_tests.api_server import free_port

    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        received = Path(tmp) / "spans.jsonl"
        collector = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dev.otlp_receiver",
                "--port",
                str(port),
                "--jsonl",
                str(received),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        endpoint = f"http://127.0.0.1:{port}"
        try:
            trained = Path(settings.lake_dir()) / "sentiment_model"
            if not trained.exists():
                trained = train_sentiment_head(Path(tmp) / "trained")
            off_ns = span_cost_off()
            api = api_submit(args, endpoint)
            runs = micro_batches(args, endpoint, trained)
        finally:
            collector.terminate()
            collector.wait()
        spans = len(received.read_text().splitlines()) if received.exists() else 0
    off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
    print(f"\nload average at end: {os.getloadavg()}; spans received: {spans}")
    print(f"\nmicro-batch of {args.docs} new documents, raw text to predictions (median)")
    print(
        f"  traces off {off:.2f} s ({len(runs['off'])} runs), on {on:.2f} s "
        f"({len(runs['on'])} runs): overhead {100 * (on / off - 1):+.1f}%"
    )
    print("\nPOST /v1/documents, p50")
    for what, figures in api.items():
        print(
            f"  {what}: off {figures['off']:.2f} ms, on {figures['on']:.2f} ms: overhead "
            f"{100 * (figures['on'] / figures['off'] - 1):+.1f}%"
        )
    print(
        f"\ntraces off: {off_ns:.0f} ns per span (a micro-batch opens a few dozen; 40 counted): "
        f"{40 * off_ns / 1e6:.3f} ms of a {off:.1f} s run"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
