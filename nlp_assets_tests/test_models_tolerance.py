"""bf16 autocast against float32 on real text (the labelled review sentences and sample-corpus
documents), measured rather than assumed: embeddings cosine >= 0.9999, sentiment labels
identical for >= 99.5% of documents. Also the warm-up's own choice of dtype."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from nlp_assets import settings
from nlp_assets.kernels.clean import clean_documents
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.kernels.sentiment import train_sentiment_head
from nlp_assets.resources.models import MIN_COSINE, ModelResource, cpu_has_bf16

N_SENTENCES = 600
N_DOCUMENTS = 100
LABEL_AGREEMENT = 0.995


@pytest.fixture(scope="module")
def real_text() -> tuple[pl.DataFrame, list[str]]:
    labelled = pl.read_parquet(settings.labelled_sentiment_path())
    labelled = labelled.sample(n=N_SENTENCES, seed=3)
    day = date(2026, 11, 18)
    raw = read_landing_day(Path(settings.landing_dir()), day).docs
    docs = clean_documents(raw.sample(n=N_DOCUMENTS, seed=3), day).docs["text"].to_list()
    return labelled, docs


@pytest.fixture(scope="module")
def embedders():
    fp32 = ModelResource(device="cpu", dtype="float32").embedder
    bf16 = ModelResource(device="cpu", dtype="bfloat16").embedder
    assert (fp32.dtype, bf16.dtype) == ("float32", "bfloat16")
    return fp32, bf16


@pytest.fixture(scope="module")
def embedded(real_text, embedders) -> dict[str, np.ndarray]:
    """Each text embedded once per dtype (bf16 without native CPU support is slow): the
    labelled sentences and the documents, float32 and bf16."""
    labelled, docs = real_text
    fp32, bf16 = embedders
    sentences = labelled["text"].to_list()
    return {
        "sentences_fp32": fp32.embed_texts(sentences),
        "sentences_bf16": bf16.embed_texts(sentences),
        "docs_fp32": fp32.embed_texts(docs),
        "docs_bf16": bf16.embed_texts(docs),
    }


def test_bf16_embeddings_stay_within_cosine_tolerance_of_float32(real_text, embedded):
    _, docs = real_text
    a = np.concatenate([embedded["sentences_fp32"], embedded["docs_fp32"]])
    b = np.concatenate([embedded["sentences_bf16"], embedded["docs_bf16"]])
    cosine = np.sum(a * b, axis=1)
    assert len(cosine) == N_SENTENCES + len(docs)
    assert cosine.min() >= MIN_COSINE, f"min cosine {cosine.min():.6f}"


def test_bf16_sentiment_labels_agree_with_float32(real_text, embedders, embedded):
    labelled, _ = real_text
    fp32, _ = embedders
    a = embedded["sentences_fp32"]
    result = train_sentiment_head(
        a,
        labelled["label"].to_list(),
        labelled["domain"].to_list(),
        embedding_model=fp32.name,
        embedding_model_version=fp32.version,
    )
    head = result.head
    labels_a = head.predict_proba(a).argmax(axis=1)
    labels_b = head.predict_proba(embedded["sentences_bf16"]).argmax(axis=1)
    agreement = float(np.mean(labels_a == labels_b))
    assert agreement >= LABEL_AGREEMENT, f"labels agree for {agreement:.4f}"


def test_auto_dtype_is_bf16_exactly_when_the_cpu_has_it_and_the_warm_up_agrees():
    embedder = ModelResource(device="cpu").embedder
    if cpu_has_bf16():
        assert embedder.dtype == "bfloat16"
        assert float(embedder.dtype_note.split()[-1]) >= MIN_COSINE
    else:
        assert embedder.dtype == "float32"
