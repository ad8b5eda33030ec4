"""Named entities: spaCy's full pipeline (what a notebook runs) against ours in one process and
on every core, on short and on long texts.

- notebook: `spacy.load("en_core_web_sm")` and `nlp.pipe(texts, batch_size=64)`, every pipe;
- ours, one process: `EntityRecognizer(processes=1)`, only `tok2vec` and `ner`;
- ours, every core: `EntityRecognizer()` (`NLP_NER_PROCESSES`, default one per core): forked
  workers on contiguous chunks, entities only sent back.

Prints docs/s of each, the ratios, whether the entities (text, label, offsets) of the
multi-process run are identical to one process, and the share of documents where they are the
full pipeline's (the full pipeline's other pipes change a few of spaCy's entity decisions). Run:
`python -m bench.entities` (in `make bench`).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from bench.pipeline import documents
from nlp_assets.resources.models import EntityRecognizer, ModelResource

KINDS = {"short": 3000, "long": 400}


def timed(run: Callable[[], list], n: int) -> tuple[float, list]:
    started = time.perf_counter()
    out = run()
    return n / (time.perf_counter() - started), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--docs", default=",".join(f"{k}={v}" for k, v in KINDS.items()), help="texts per kind"
    )
    args = parser.parse_args(argv)
    import spacy

    package = ModelResource(device="cpu").ner_model
    full = spacy.load(package)
    serial = EntityRecognizer(package, processes=1)
    parallel = EntityRecognizer(package)
    for warm in (serial, parallel):
        warm.entities(documents("short", 20))
    print(f"spaCy {package}, {os.cpu_count()} CPUs, ours on {parallel.processes} processes")
    print(
        f"{'texts':<6} {'docs':>5} {'full pipe':>10} {'ours, 1 process':>16} "
        f"{'ours, all cores':>16}"
    )
    for item in args.docs.split(","):
        kind, _, count = item.partition("=")
        texts = documents(kind, int(count))
        n = len(texts)
        notebook_rate, notebook = timed(
            lambda texts=texts: [
                [(e.text, e.label_, e.start_char, e.end_char) for e in doc.ents]
                for doc in full.pipe(texts, batch_size=64)
            ],
            n,
        )
        one_rate, one = timed(lambda texts=texts: serial.entities(texts), n)
        all_rate, every = timed(lambda texts=texts: parallel.entities(texts), n)
        as_tuples = [
            [(e["text"], e["label"], e["start_char"], e["end_char"]) for e in d] for d in every
        ]
        print(
            f"{kind:<6} {n:>5} {notebook_rate:>10.1f} {one_rate:>16.1f} {all_rate:>16.1f}   "
            f"all cores {all_rate / notebook_rate:.2f}x the full pipe, "
            f"{all_rate / one_rate:.2f}x one process; identical to one process: {every == one}; "
            f"documents with the full pipe's entities: "
            f"{sum(a == b for a, b in zip(as_tuples, notebook, strict=True)) / n:.2%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
