"""`nlp models calibrate`: export the embedding model for every installed backend, run the
accuracy gate and time each on short and long texts, once per (model version, device
signature), and write the calibration record `auto` reads (backends.py, docs/models.md
"Backends").

The gate (issue 25), against float32 torch on the same texts: min cosine >= 0.999 over every
text, and the sentiment head (the lake's trained one, else one trained here on labelled
sentences) giving the same label for >= 99.5% of them. Entities come from spaCy, which no
embedding backend touches, so they are not part of it. A candidate that fails is recorded with
its figures and never chosen. Run: `nlp models calibrate` or
`python -m nlp_assets.resources.models.calibrate` (after `make data`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from nlp_assets import settings
from nlp_assets.resources.models import backends
from nlp_assets.resources.models.adapters import SentenceEmbedder
from nlp_assets.resources.models.backends import Candidate


def _labelled() -> Any:
    """The labelled sentiment set (`make data`), in a fixed shuffled order."""
    import polars as pl

    return pl.read_parquet(settings.labelled_sentiment_path()).sample(
        fraction=1.0, shuffle=True, seed=0
    )


def gate_texts(n_short: int, n_long: int) -> dict[str, list[str]]:
    """Real texts: labelled review sentences (short) and the landing folder's news articles,
    else the labelled drug reviews (long)."""
    import polars as pl

    labelled = pl.read_parquet(settings.labelled_sentiment_path()).sample(
        fraction=1.0, shuffle=True, seed=0
    )
    short = labelled.filter(pl.col("domain") == "movie_sentences")["text"].to_list()
    long: list[str] = []
    landing = Path(settings.landing_dir())
    if landing.is_dir():
        from datetime import date

        from nlp_assets.kernels.ingest import read_landing_day

        for day in sorted(p for p in landing.iterdir() if p.is_dir()):
            docs = read_landing_day(landing, date.fromisoformat(day.name)).docs
            long += docs.filter(pl.col("source") == "bbc_news")["text"].to_list()
            if len(set(long)) >= n_long:
                break
    if len(set(long)) < n_long:
        long += labelled.filter(pl.col("domain") == "drug_reviews")["text"].to_list()
    return {
        "short": list(dict.fromkeys(short))[:n_short],
        "long": list(dict.fromkeys(t for t in long if t.strip()))[:n_long],
    }


def sentiment_head(reference: SentenceEmbedder, skip: int, n: int = 800) -> Any:
    """The lake's trained sentiment head, else one trained on `n` labelled sentences after the
    first `skip` (the gate's own) with float32 embeddings."""
    import polars as pl

    from nlp_assets.kernels.sentiment import SentimentHead, train_sentiment_head
    from nlp_assets.lake import Lake

    try:
        lake = Lake(settings.lake_dir())
        if lake.exists("sentiment_model"):
            return SentimentHead.from_frame(lake.read_part("sentiment_model", None))
    except Exception:  # no lake here: train one
        pass
    labelled = pl.read_parquet(settings.labelled_sentiment_path()).sample(
        fraction=1.0, shuffle=True, seed=0
    )
    labelled = labelled.filter(pl.col("domain") == "movie_sentences").slice(skip, n)
    vectors = reference.embed_texts(labelled["text"].to_list())
    return train_sentiment_head(
        vectors,
        labelled["label"].to_list(),
        labelled["domain"].to_list(),
        embedding_model=reference.name,
        embedding_model_version=reference.version,
    ).head


def embedders(device: str = "cpu", max_length: int = 256) -> tuple[SentenceEmbedder, ...]:
    """(float32 torch: the reference; torch as it serves: today's path), one window each."""
    from nlp_assets.resources.models.resource import ModelResource

    def one(dtype: str) -> SentenceEmbedder:
        resource = ModelResource(
            device=device, dtype=dtype, max_length=max_length, max_windows=1, backend="torch"
        )
        return resource.serve("embedding").model

    return one("float32"), one("auto")


def timed(embedder: SentenceEmbedder, tokens: list[list[int]]) -> float:
    """docs/s of one call."""
    started = time.perf_counter()
    embedder.embed_token_ids(tokens)
    return len(tokens) / (time.perf_counter() - started)


def measure(
    texts: dict[str, list[str]],
    candidates: tuple[str, ...],
    folder: Path,
    *,
    rounds: int = 2,
    device: str = "cpu",
    head_texts: int = 800,
    log: Any = print,
    between_rounds: Any = None,
) -> tuple[list[Candidate], dict[str, Any]]:
    """Export, load and gate each candidate on `texts` (kind -> texts) in this process, then
    time them all in `rounds` interleaved rounds (best of each: a machine whose speed drifts
    slows every candidate alike). Returns the candidates and what a benchmark takes its other
    figures from (the embedders, the tokens). `between_rounds()` runs after each round."""
    reference, served = embedders(device)
    tokens = {kind: served.tokenize(batch) for kind, batch in texts.items()}
    everything = [ids for kind in texts for ids in tokens[kind]]
    truth = reference.embed_token_ids(everything)
    head = sentiment_head(reference, skip=len(texts.get("short", [])), n=head_texts)
    labels = head.predict_proba(truth).argmax(1)
    threads = served._torch.get_num_threads()
    out: list[Candidate] = []
    runners: dict[str, Any] = {}
    for backend in candidates:
        candidate = Candidate(backend=backend)
        out.append(candidate)
        try:
            runner = None
            if backend != "torch":
                started = time.perf_counter()
                # every length the model has positions for: a longer max_length still runs
                positions = getattr(reference.model.config, "max_position_embeddings", 512)
                backends.export(backend, reference.model, folder, positions)
                candidate.export_s = time.perf_counter() - started
                candidate.sha256 = {
                    name: backends.sha256_of(folder / name)
                    for name in backends.ARTEFACT_FILES[backend]
                }
                started = time.perf_counter()
                runner = backends.load_runner(backend, folder, threads, candidate.sha256)
                candidate.load_s = time.perf_counter() - started
            name = (
                f"torch-{served.dtype}"
                if runner is None
                else backends.precision_of(backend, device)
            )
            served.serve_with(runner, name)
            candidate.served_as = served.backend
            vectors = served.embed_token_ids(everything)
            candidate.min_cosine = float(np.min(np.sum(vectors * truth, axis=1)))
            candidate.labels_agree = float(np.mean(head.predict_proba(vectors).argmax(1) == labels))
            candidate.passed = (
                candidate.min_cosine >= backends.GATE_MIN_COSINE
                and candidate.labels_agree >= backends.GATE_MIN_LABEL_AGREEMENT
            )
            runners[backend] = runner
        except Exception as error:  # a backend that cannot export or run here
            candidate.error = f"{type(error).__name__}: {error}"[:500]
    for _ in range(rounds):
        for candidate in out:
            if candidate.backend not in runners:
                continue
            served.serve_with(runners[candidate.backend], candidate.served_as)
            served.embed_token_ids(everything[:16])  # warm
            for kind in texts:
                figure = timed(served, tokens[kind])
                candidate.docs_per_s[kind] = max(candidate.docs_per_s.get(kind, 0.0), figure)
        if between_rounds is not None:  # e.g. a benchmark's peak, measured as often
            between_rounds()
    served.serve_with(None, f"torch-{served.dtype}")
    for candidate in out:
        log(
            f"{candidate.served_as or candidate.backend:<22} passed={candidate.passed} "
            f"min cosine {candidate.min_cosine:.6f} labels {candidate.labels_agree:.4f} "
            + " ".join(f"{k} {v:.1f} docs/s" for k, v in candidate.docs_per_s.items())
            + f" export {candidate.export_s:.1f}s load {candidate.load_s:.2f}s"
            + (f" ERROR {candidate.error}" if candidate.error else "")
        )
    return out, {"reference": reference, "served": served, "tokens": tokens, "runners": runners}


def calibrate(
    n_short: int = 300,
    n_long: int = 300,
    candidates: tuple[str, ...] | None = None,
    root: Path | None = None,
    rounds: int = 2,
) -> Path:
    """Measure every installed backend and write this machine's calibration record."""
    texts = gate_texts(n_short, n_long)
    reference, served = embedders("cpu")
    folder = backends.artefact_dir(served.version, served.device, root)
    del reference, served
    found, _ = measure(texts, candidates or backends.installed(export=True), folder, rounds=rounds)
    chosen = backends.choose(found)
    record = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "signature": folder.name,
        "texts": {kind: len(batch) for kind, batch in texts.items()},
        "gate": {
            "min_cosine": backends.GATE_MIN_COSINE,
            "min_labels_agree": backends.GATE_MIN_LABEL_AGREEMENT,
        },
        "candidates": {c.backend: asdict(c) for c in found},
        "chosen": chosen.backend if chosen else "torch",
    }
    path = backends.write_calibration(folder, record)
    print(f"chosen: {record['chosen']} ({path})")
    return path


def main(argv: list[str] | None = None) -> int:
    from nlp_assets.client.cli import add_calibrate_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_calibrate_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """`nlp models calibrate` (options: `cli.add_calibrate_arguments`)."""
    wanted = tuple(filter(None, args.backends.split(","))) or None
    root = Path(args.artifacts) if args.artifacts else None
    calibrate(args.short, args.long, wanted, root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
