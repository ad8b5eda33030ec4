"""Embedding backends side by side: today's torch path, torch compiled ahead of time
(AOTInductor), OpenVINO (bf16, and int8 weights where NNCF is installed) and ONNX Runtime, on
short and on long texts, in one process.

The same MiniLM (the bundled all-MiniLM-L6-v2, 256-token windows, mean pooling and L2 norm) on
the texts `bench.models --texts short|long` reads (review sentences; news articles). For each
backend: docs/s on each kind (best of `--rounds` interleaved rounds); the share of this
machine's bf16 matmul peak, measured after every round (the best, like the rates), from the
useful FLOPs of the model's shape and the real token counts (`bench.models.model_flops`); the
accuracy gate against float32 torch on every text (min cosine >= 0.999, sentiment labels of
the trained head agreeing on >= 99.5%; entities come from spaCy, which no backend touches);
the export (compile) time, and the time a fresh process takes to load the artefact and run
one text (imports included). Artefacts go to a temporary folder; `nlp models calibrate`
writes the record `auto` reads. Run:
    python -m bench.backends [--short 1000 --long 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.models import matmul_peak, model_flops
from bench.pipeline import documents
from nlp_assets.resources.models import backends
from nlp_assets.resources.models.calibrate import measure

LOAD = """
import json, sys, time
started = time.perf_counter()
from nlp_assets.resources.models import backends
backend, folder, threads, sha = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
run = backends.load_runner(backend, __import__("pathlib").Path(folder), threads, sha)
import numpy as np
run(np.array([[101, 2204, 102]]), np.ones((1, 3), dtype=np.int64))
print(time.perf_counter() - started)
"""

TORCH_LOAD = """
import time
started = time.perf_counter()
from nlp_assets.resources.models import ModelResource
ModelResource(max_windows=1, backend="torch").embedder
print(time.perf_counter() - started)
"""


def fresh_process_seconds(code: str, *args: str) -> float:
    """Seconds a new Python process takes to run `code` (it prints them), imports included."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=1000, help="review sentences")
    parser.add_argument("--long", type=int, default=300, help="news articles")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--backends", default="", help="comma list (default: all installed)")
    args = parser.parse_args(argv)
    texts = {"short": documents("short", args.short), "long": documents("long", args.long)}
    wanted = tuple(filter(None, args.backends.split(","))) or backends.installed(export=True)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        folder = Path(tmp) / "artefacts"
        print(
            f"{len(texts['short'])} short and {len(texts['long'])} long texts; torch "
            f"{torch.__version__}, {threads} threads, {os.cpu_count()} CPUs; device signature "
            f"{backends.device_signature('cpu')}; load average {os.getloadavg()[0]:.2f}"
        )
        peaks = {"bf16": 0.0, "fp32": 0.0}

        def measure_peaks() -> None:  # after every round: the best seen, like the rates
            peaks["bf16"] = max(peaks["bf16"], matmul_peak(torch.bfloat16, "cpu"))
            peaks["fp32"] = max(peaks["fp32"], matmul_peak(torch.float32, "cpu"))

        found, parts = measure(
            texts,
            wanted,
            folder,
            rounds=args.rounds,
            log=lambda _: None,
            between_rounds=measure_peaks,
        )
        peak, peak32 = peaks["bf16"], peaks["fp32"]
        flops = {
            kind: model_flops(parts["reference"].model, [len(t) for t in tokens]) / len(tokens)
            for kind, tokens in parts["tokens"].items()
        }
        loads = {"torch": fresh_process_seconds(TORCH_LOAD)}
        for c in found:
            if c.backend != "torch" and not c.error:
                loads[c.backend] = fresh_process_seconds(
                    LOAD, c.backend, str(folder), str(threads), json.dumps(c.sha256)
                )
    print(
        f"matmul peak in this run: bf16 {peak / 1e9:.0f} GFLOP/s, fp32 {peak32 / 1e9:.0f} "
        f"GFLOP/s; load average now {os.getloadavg()[0]:.2f}"
    )
    torch_rates = next(c.docs_per_s for c in found if c.backend == "torch")
    print()
    print(
        f"{'backend':<20} {'short d/s':>9} {'x torch':>7} {'% bf16 pk':>9} {'long d/s':>9} "
        f"{'x torch':>7} {'% bf16 pk':>9} {'min cos':>9} {'labels':>7} {'gate':>5} "
        f"{'export s':>8} {'load s':>7}"
    )
    for c in found:
        if c.error:
            print(f"{c.backend:<20} failed to export or run: {c.error}")
            continue
        cells = []
        for kind in ("short", "long"):
            rate = c.docs_per_s.get(kind, 0.0)
            share = rate * flops[kind] / peak
            cells.append(f"{rate:9.1f} {rate / torch_rates[kind]:7.2f} {share:9.1%}")
        print(
            f"{c.served_as:<20} {' '.join(cells)} {c.min_cosine:9.6f} {c.labels_agree:7.2%} "
            f"{'pass' if c.passed else 'FAIL':>5} {c.export_s:8.1f} {loads.get(c.backend, 0):7.2f}"
        )
    chosen = backends.choose(found)
    print(f"\nauto would serve: {chosen.served_as if chosen else 'torch (none passed)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
