"""A sentiment head (logistic regression over sentence embeddings): training, evaluation, use.

The trained head is stored as a plain table (label, intercept, coefficients), not a pickle, so
the lake never holds executable bytes and any reader can apply it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import cast

import numpy as np
import polars as pl

HEAD_SCHEMA_BASE: dict[str, pl.DataType] = {
    "label": pl.String(),
    "intercept": pl.Float64(),
    "embedding_model": pl.String(),
    "embedding_model_version": pl.String(),
}


#: The name `predictions` rows give the logistic head (the A/B control), with its version.
SENTIMENT_MODEL_NAME = "minilm-logreg-sentiment"


@dataclass(frozen=True)
class SentimentHead:
    labels: tuple[str, ...]
    coef: np.ndarray  # (n_labels, dim)
    intercept: np.ndarray  # (n_labels,)
    embedding_model: str
    embedding_model_version: str

    @property
    def version(self) -> str:
        """Content hash of the weights: the same head always reports the same version."""
        digest = hashlib.sha256(self.coef.astype(np.float64).tobytes())
        digest.update(self.intercept.astype(np.float64).tobytes())
        digest.update("\x1f".join(self.labels).encode())
        return digest.hexdigest()[:12]

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        logits = embeddings.astype(np.float64) @ self.coef.T + self.intercept
        if logits.shape[1] == 1:  # binary, scikit-learn style: one row for the second label
            p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def to_frame(self) -> pl.DataFrame:
        # Binary heads keep one weight row (for the positive class) like scikit-learn; the
        # first label row carries no weights, marked by a null coefficient vector.
        rows = len(self.labels)
        coef = [None] * (rows - self.coef.shape[0]) + [row.tolist() for row in self.coef]
        intercept = [None] * (rows - self.intercept.shape[0]) + self.intercept.tolist()
        return pl.DataFrame(
            {
                "label": list(self.labels),
                "intercept": intercept,
                "coef": coef,
                "embedding_model": [self.embedding_model] * rows,
                "embedding_model_version": [self.embedding_model_version] * rows,
            },
            schema={**HEAD_SCHEMA_BASE, "coef": pl.List(pl.Float64())},
        )

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> SentimentHead:
        weighted = frame.filter(pl.col("coef").is_not_null())
        return cls(
            labels=tuple(frame["label"].to_list()),
            coef=np.asarray(weighted["coef"].to_list(), dtype=np.float64),
            intercept=weighted["intercept"].to_numpy().astype(np.float64),
            embedding_model=frame["embedding_model"][0],
            embedding_model_version=frame["embedding_model_version"][0],
        )


def domain_weights(domains: np.ndarray) -> np.ndarray:
    """Sample weights giving every domain the same total weight (mean weight 1).

    The labelled set is 88% movie sentences; unweighted, the head fits movies and scores
    below the majority class on drug reviews. Measured on the held-out split: drug reviews
    0.67 -> 0.725 accuracy, movie sentences 0.767 -> 0.76, overall unchanged (0.756).
    """
    names, counts = np.unique(domains, return_counts=True)
    per_domain = dict(zip(names, len(domains) / (len(names) * counts), strict=True))
    return np.array([per_domain[d] for d in domains])


def held_out_split(
    labels: list[str], domains: list[str], *, test_size: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out row indices, stratified by label x domain: every sentiment model
    (the head, the fine-tuned classifier) is evaluated on the same held-out rows."""
    from sklearn.model_selection import train_test_split  # on use: 0.9 s of an import

    strata = [f"{d}/{lab}" for d, lab in zip(domains, labels, strict=True)]
    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=test_size, random_state=seed, stratify=strata)
    return train, test


@dataclass(frozen=True)
class TrainResult:
    head: SentimentHead
    metrics: dict[str, float | int]
    per_domain: pl.DataFrame


def train_sentiment_head(
    embeddings: np.ndarray,
    labels: list[str],
    domains: list[str],
    *,
    embedding_model: str,
    embedding_model_version: str,
    test_size: float = 0.2,
    seed: int = 0,
) -> TrainResult:
    """Fit on a stratified (label x domain) split, domains weighted equally; evaluate on the
    held-out part."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    train, test = held_out_split(labels, domains, test_size=test_size, seed=seed)
    y = np.asarray(labels)
    model = LogisticRegression(C=4.0, max_iter=2_000)
    model.fit(embeddings[train], y[train], sample_weight=domain_weights(np.asarray(domains)[train]))
    head = SentimentHead(
        labels=tuple(str(c) for c in model.classes_),
        coef=model.coef_.astype(np.float64),
        intercept=model.intercept_.astype(np.float64),
        embedding_model=embedding_model,
        embedding_model_version=embedding_model_version,
    )
    predicted = np.asarray(head.labels)[head.predict_proba(embeddings[test]).argmax(axis=1)]
    truth = y[test]
    test_domains = np.asarray(domains)[test]
    per_domain = (
        pl.DataFrame({"domain": test_domains, "truth": truth, "predicted": predicted})
        .group_by("domain")
        .agg(
            pl.len().alias("n_test"),
            (pl.col("truth") == pl.col("predicted")).mean().alias("accuracy"),
        )
        .sort("domain")
    )
    metrics: dict[str, float | int] = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro")),
        "n_train": len(train),
        "n_test": len(test),
        # `max()` of the (integer) count column; polars types it as any scalar
        "majority_baseline": float(
            cast(int, pl.Series(truth).value_counts()["count"].max()) / len(truth)
        ),
    }
    return TrainResult(head=head, metrics=metrics, per_domain=per_domain)


Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (e.g. accuracy on n held-out rows)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))
