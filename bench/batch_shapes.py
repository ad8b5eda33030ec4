"""Embedding throughput by batch shape on this device: the token budget alone against row caps.

Short texts (review sentences of the labelled set) and long ones (news articles of a landing
day) separately, in one process, the same model and dtype; the budget alone runs first and
last (its spread is the noise). Prints docs/s per shape and the min cosine of each shape's
vectors to the budget's. How `BATCH_ROWS` in `resources/models/device.py` was chosen
(docs/models.md "Batch shapes"). Run after `make data`:
    python -m bench.batch_shapes --dtype auto
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from nlp_assets import settings
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.resources.models import ModelResource


def texts(short: int, long: int, day: str) -> dict[str, list[str]]:
    labelled = pl.read_parquet(settings.labelled_sentiment_path())
    sentences = labelled.filter(pl.col("domain") == "movie_sentences")["text"].to_list()
    docs = read_landing_day(Path(settings.landing_dir()), date.fromisoformat(day)).docs
    news = docs.filter(pl.col("source") == "bbc_news")["text"].to_list()
    return {"short": sentences[:short], "long": news[:long]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--caps", default="32,64,128", help="row caps to try")
    parser.add_argument("--short", type=int, default=600)
    parser.add_argument("--long", type=int, default=300)
    parser.add_argument("--day", default="2026-11-16")
    args = parser.parse_args(argv)
    embedder = ModelResource(device=args.device, dtype=args.dtype, max_windows=1).embedder
    print(f"device {embedder.device}, dtype {embedder.dtype}, row cap {embedder.batch_rows}")
    shapes = [0, *(int(c) for c in args.caps.split(",")), 0]
    for kind, batch in texts(args.short, args.long, args.day).items():
        lengths = [len(ids) for ids in embedder.tokenize(batch)]
        print(f"{kind}: {len(batch)} texts, {np.mean(lengths):.0f} tokens on average")
        reference = None
        for cap in shapes:
            embedder.batch_rows = cap
            embedder.embed_texts(batch[:16])  # warm
            started = time.perf_counter()
            vectors = embedder.embed_texts(batch)
            rate = len(batch) / (time.perf_counter() - started)
            reference = vectors if reference is None else reference
            cosine = float(np.min(np.sum(vectors * reference, axis=1)))
            label = f"cap {cap}" if cap else "budget alone"
            print(f"  {label:<14} {rate:8.1f} docs/s   min cosine to the budget's {cosine:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
