"""Long documents: sentiment accuracy and token cost of embedding a document's whole text.

Before: the embedder read a document's first 256 tokens. After: a longer document is read in
overlapping windows (`SentenceEmbedder.windows`), whose vectors are pooled into one
(`pool_windows`). This measures, on the same documents and in one run:

- evaluation sets: the full Pang & Lee movie reviews (1,500, labelled; a stratified sample with
  `--movies`) and the drugs.com *test* reviews rated positive or negative (the held-out drug
  slice: the labelled set that trains the head holds only *train* reviews);
- the sentiment head trained as `sentiment_model` trains it (`train_sentiment_head` on the
  labelled set, embedded with the same settings as the evaluation documents);
- for each window layout (`--layouts`, max_length/overlap), windows cap (`--caps`) and pooling
  (mean, token-weighted mean, max): accuracy with a 95% interval, the documents it fixes and
  breaks against the first-256-tokens baseline, mean windows and tokens embedded per document;
- compatibility of pooled vectors with the head: accuracy of the head on the pooled vector
  against the mean of its probabilities over the windows.

Window vectors are cached on disk (`--cache`, default `$NLP_DATA_DIR/cache/bench-long-documents`)
by a digest of the model version, dtype and the windows' token ids, so a second run is fast.
Run: `python -m bench.long_documents` (all 1,500 movie reviews: about 1.3M tokens per layout)
or `python -m bench.long_documents --movies 200` on a slow machine.
`python -m bench.long_documents --features-docs 60 --caps 1,4` times the features kernel on 60
documents of a sample day, per cap (the cost side).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from dev.sample_corpus import DRUG_TEST, fetch_pattern_corpora, read_drug_reviews
from nlp_assets import settings
from nlp_assets.kernels.pattern_corpora import PANG_LEE_REVIEWS, read_polarity_csv
from nlp_assets.kernels.sentiment import SentimentHead, train_sentiment_head
from nlp_assets.resources.models import ModelResource, SentenceEmbedder, pool_windows

POOLINGS = ("mean", "token-weighted-mean", "max")
#: Windows a document may have while measuring (caps below are prefixes of these windows).
MEASURE_WINDOWS = 64


@dataclass
class Labelled:
    name: str
    texts: list[str]
    labels: list[str]


@dataclass
class Windowed:
    """All windows of a set of documents under one layout, embedded."""

    vectors: np.ndarray  # (n_windows, dim)
    owner: np.ndarray  # document of each window
    index: np.ndarray  # position of the window in its document
    tokens: np.ndarray  # tokens of the window (special ones included)
    seconds: float  # embedding time (0 when read from the cache)

    def cap(self, k: int) -> np.ndarray:
        return self.index < k


def movie_reviews(n: int, seed: int) -> Labelled:
    corpora = fetch_pattern_corpora(settings.data_dir() / "cache")
    rows = read_polarity_csv(corpora / PANG_LEE_REVIEWS)
    frame = pl.DataFrame(rows, schema=["label", "text"], orient="row").with_row_index()
    if n < frame.height:  # stratified by label
        per_label = n // 2
        frame = pl.concat(
            part.sample(min(per_label, part.height), seed=seed)
            for part in frame.partition_by("label", maintain_order=True)
        ).sort("index")
    return Labelled("movie_reviews", frame["text"].to_list(), frame["label"].to_list())


def drug_test_reviews() -> Labelled:
    """The drugs.com test reviews rated positive or negative, cleaned as the labelled set is."""
    rows = [r for r in read_drug_reviews(DRUG_TEST) if r["rating"] in ("positive", "negative")]
    texts = [html.unescape(r["review"]).replace("\r\n", "\n").strip() for r in rows]
    return Labelled("drug_reviews_test", texts, [r["rating"] for r in rows])


def layout(embedder: SentenceEmbedder, max_length: int, overlap: int) -> SentenceEmbedder:
    """The same loaded model reading windows of `max_length` tokens overlapping by `overlap`."""
    out = copy.copy(embedder)
    out.max_length, out.window_overlap, out.max_windows = max_length, overlap, MEASURE_WINDOWS
    return out


#: Window vectors of this run by the window's token ids (one model, one dtype per run).
_memo: dict[bytes, np.ndarray] = {}


def embed_windows(
    embedder: SentenceEmbedder, token_ids: list[list[int]], cache_dir: Path
) -> Windowed:
    windows, owner, index = [], [], []
    for doc, ids in enumerate(token_ids):
        for i, window in enumerate(embedder.windows(ids)):
            windows.append(window)
            owner.append(doc)
            index.append(i)
    digest = hashlib.sha256(f"{embedder.version}:{embedder.dtype}".encode())
    for window in windows:
        digest.update(np.asarray(window, dtype="<u4").tobytes() + b"\xff\xff\xff\xff")
    path = cache_dir / f"{digest.hexdigest()[:24]}.npy"
    seconds = 0.0
    keys = [np.asarray(w, dtype="<u4").tobytes() for w in windows]
    if path.exists():
        vectors = np.load(path, allow_pickle=False)
    else:  # windows another layout already embedded (short documents) are not run again
        missing = sorted({i for i, key in enumerate(keys) if key not in _memo})
        started = time.perf_counter()
        fresh = embedder.embed_windows([windows[i] for i in missing])
        seconds = time.perf_counter() - started
        _memo.update((keys[i], vector) for i, vector in zip(missing, fresh, strict=True))
        vectors = np.vstack([_memo[key] for key in keys]) if keys else fresh
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors, allow_pickle=False)
    _memo.update(zip(keys, vectors, strict=True))
    return Windowed(
        vectors,
        np.asarray(owner),
        np.asarray(index),
        np.asarray([len(w) for w in windows]),
        seconds,
    )


def documents(windowed: Windowed, n_docs: int, k: int, how: str, special: int) -> np.ndarray:
    keep = windowed.cap(k)
    weights = np.maximum(windowed.tokens[keep] - special, 1)
    return pool_windows(windowed.vectors[keep], windowed.owner[keep], weights, n_docs, how)


def interval(correct: int, n: int) -> tuple[float, float]:
    """Wilson 95% interval of an accuracy."""
    if n == 0:
        return (math.nan, math.nan)
    z, p = 1.96, correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def predict(head: SentimentHead, vectors: np.ndarray) -> np.ndarray:
    return np.asarray(head.labels)[head.predict_proba(vectors).argmax(axis=1)]


def time_features(n_docs: int, day: str, caps: list[int], device: str) -> None:
    """CPU seconds of `build_features` (the features step's kernel) on `n_docs` documents of a
    landing day, per windows cap, in this process (CPU time: steadier than wall time on a
    shared machine)."""
    from datetime import date

    from nlp_assets.kernels.clean import clean_documents
    from nlp_assets.kernels.features import build_features
    from nlp_assets.kernels.ingest import read_landing_day
    from nlp_assets.kernels.tokenize import tokenize_documents

    when = date.fromisoformat(day)
    raw = read_landing_day(Path(settings.landing_dir()), when).docs
    cleaned = clean_documents(raw, when).docs
    cleaned = cleaned.sample(min(n_docs, cleaned.height), seed=0)
    base = ModelResource(device=device, max_windows=1).embedder
    for k in caps:
        embedder = copy.copy(base)
        embedder.max_windows = k
        started, cpu = time.perf_counter(), time.process_time()
        tokens = tokenize_documents(cleaned, embedder.tokenizer, embedder.read_length)
        build_features(cleaned, tokens, embedder)
        windows = sum(map(embedder.n_windows, tokens["token_ids"].list.len()))
        print(
            f"features on {cleaned.height} documents of {day}, cap {k}: {windows} windows, "
            f"{time.process_time() - cpu:.1f} CPU s, {time.perf_counter() - started:.1f} s",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, default=1_500, help="movie reviews (of 1,500)")
    parser.add_argument(
        "--labelled",
        type=int,
        default=0,
        help="train the head on this many labelled rows (stratified sample; 0: all, as "
        "sentiment_model does)",
    )
    parser.add_argument("--layouts", default="256/32,256/0,512/0", help="max_length/overlap,...")
    parser.add_argument("--caps", default="1,2,4,8,64", help="windows caps to compare")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache", type=Path, default=settings.data_dir() / "cache" / "bench-long-documents"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--features-docs",
        type=int,
        default=0,
        help="only time the features kernel on this many documents of --day, per cap",
    )
    parser.add_argument("--day", default="2026-11-16", help="landing day for --features-docs")
    args = parser.parse_args(argv)
    caps = [int(c) for c in args.caps.split(",")]
    if args.features_docs:
        time_features(args.features_docs, args.day, caps, args.device)
        return 0
    layouts = [tuple(int(x) for x in item.split("/")) for item in args.layouts.split(",")]

    base = ModelResource(device=args.device, max_windows=1).embedder
    labelled = pl.read_parquet(settings.labelled_sentiment_path())
    if 0 < args.labelled < labelled.height:
        labelled = (
            labelled.with_row_index()
            .filter(
                pl.int_range(pl.len()).shuffle(seed=args.seed).over("domain", "label")
                < pl.len().over("domain", "label") * args.labelled / labelled.height
            )
            .drop("index")
        )
    sets = [movie_reviews(args.movies, args.seed), drug_test_reviews()]
    # all of every text (cut far beyond any cap measured): each layout windows the same ids
    reader = layout(base, 512, 0)
    reader.max_windows = MEASURE_WINDOWS
    ids = {s.name: reader.tokenize(s.texts) for s in [*sets]}
    ids["labelled"] = reader.tokenize(labelled["text"].to_list())
    special = sum(base.special_tokens)
    print(
        f"model {base.name}@{base.version} ({base.dtype}, {base.device}), "
        f"{base.model.config.max_position_embeddings} positions; labelled set "
        f"{labelled.height} rows ({sum(len(i) > 256 for i in ids['labelled'])} over 256 tokens)"
    )
    for s in sets:
        lengths = np.asarray([len(i) for i in ids[s.name]])
        print(
            f"{s.name}: {len(s.texts)} documents, tokens mean {lengths.mean():.0f}, median "
            f"{np.median(lengths):.0f}, p90 {np.percentile(lengths, 90):.0f}, "
            f"over 256: {(lengths > 256).mean():.1%}"
        )

    rows: list[dict[str, object]] = []
    baseline: dict[str, np.ndarray] = {}
    heads: dict[bytes, SentimentHead] = {}
    for max_length, overlap in layouts:
        reading = layout(base, max_length, overlap)
        embedded = {
            name: embed_windows(reading, token_ids, args.cache) for name, token_ids in ids.items()
        }
        for how in POOLINGS:
            for k in caps:
                if how != POOLINGS[0] and k == 1:
                    continue  # one window: every pooling is the window itself
                train = documents(embedded["labelled"], labelled.height, k, how, special)
                key = hashlib.sha256(train.tobytes()).digest()
                if key not in heads:
                    heads[key] = train_sentiment_head(
                        train,
                        labelled["label"].to_list(),
                        labelled["domain"].to_list(),
                        embedding_model=base.name,
                        embedding_model_version=base.version,
                    ).head
                head = heads[key]
                for s in sets:
                    windowed = embedded[s.name]
                    n = len(s.texts)
                    vectors = documents(windowed, n, k, how, special)
                    predicted = predict(head, vectors)
                    truth = np.asarray(s.labels)
                    right = predicted == truth
                    name = f"{max_length}/{overlap} cap {k} {how}"
                    if max_length == 256 and k == 1:
                        baseline.setdefault(s.name, right)
                    before = baseline.get(s.name, right)
                    keep = windowed.cap(k)
                    # compatibility: the head on each window, probabilities averaged per document
                    window_p = head.predict_proba(windowed.vectors[keep])
                    summed = np.zeros((n, window_p.shape[1]))
                    np.add.at(summed, windowed.owner[keep], window_p)
                    by_proba = np.asarray(head.labels)[summed.argmax(axis=1)] == truth
                    low, high = interval(int(right.sum()), n)
                    rows.append(
                        {
                            "set": s.name,
                            "layout": f"{max_length}/{overlap}",
                            "cap": k,
                            "pooling": how,
                            "n": n,
                            "accuracy": round(float(right.mean()), 4),
                            "ci95": f"{low:.3f}-{high:.3f}",
                            "fixed": int((right & ~before).sum()),
                            "broken": int((~right & before).sum()),
                            "acc_mean_window_proba": round(float(by_proba.mean()), 4),
                            "windows_per_doc": round(float(keep.sum()) / n, 2),
                            "tokens_per_doc": round(float(windowed.tokens[keep].sum()) / n, 1),
                        }
                    )
                    print(
                        f"{s.name:18} {name:32} acc {right.mean():.3f} [{low:.3f}, {high:.3f}] "
                        f"+{rows[-1]['fixed']}/-{rows[-1]['broken']} "
                        f"proba-pooled {by_proba.mean():.3f} windows/doc "
                        f"{rows[-1]['windows_per_doc']} tokens/doc {rows[-1]['tokens_per_doc']}",
                        flush=True,
                    )
        spent = sum(w.seconds for w in embedded.values())
        if spent:
            print(f"layout {max_length}/{overlap}: {spent:.0f} s embedding windows not cached")
    table = pl.DataFrame(rows)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
