"""Quality watched every day: per day and source, what the predictions look like and how far
the day moved from the previous seven days.

Per (day, source): label mix, mean P(positive), share of skipped and of quarantined documents,
entity density (per document and per 100 tokens) and the cosine distance of the day's embedding
centroid from the centroid of the previous seven days (pooled over their documents). The shift
judgement (`shift_findings`) compares a day with that same baseline. Plain polars and numpy:
no Dagster here (the asset is nlp_assets/stages/quality.py; docs/quality.md explains the
figures and how the thresholds were derived from the sample days).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import PurePosixPath

import numpy as np
import polars as pl

from nlp_assets.kernels.ingest import TEXT_FILES_SOURCE, TEXT_SUFFIXES

#: How many previous days make the baseline (calendar days; days without data are absent).
BASELINE_DAYS = 7
#: How a document without a sentiment label shows in the label mix.
SKIPPED_LABEL = "skipped"
#: A source is judged only with at least this many documents today and in its baseline: on
#: fewer, sampling noise alone moves the shares past any useful threshold (docs/quality.md).
MIN_DOCS_JUDGED = 100
#: The centroid threshold scales with the sampling noise of two means of n and m documents:
#: distance > factor x (1/n + 1/m). Factor: the largest distance / (1/n + 1/m) of a judged
#: source over the five sample days of `make run` (3.54, bbc_news), plus half of it as a margin
#: (docs/quality.md, "How the thresholds were derived").
CENTROID_NOISE_FACTOR = 5.3
#: Share thresholds (absolute): at `MIN_DOCS_JUDGED` documents against a week's baseline, 0.15
#: is about 2.8 binomial standard deviations of a share near 50% (docs/quality.md).
MAX_POSITIVE_SHARE_SHIFT = 0.15
MAX_SKIPPED_SHARE_SHIFT = 0.10

LABEL_COUNT_STRUCT = pl.Struct({"label": pl.String(), "n_docs": pl.Int64()})

QUALITY_SCHEMA: dict[str, pl.DataType] = {
    "ingest_date": pl.Date(),
    "source": pl.String(),
    "n_docs": pl.Int64(),
    "n_scored": pl.Int64(),
    "label_mix": pl.List(LABEL_COUNT_STRUCT),
    "positive_share": pl.Float64(),
    "mean_sentiment_score": pl.Float64(),
    "skipped_share": pl.Float64(),
    "n_quarantined": pl.Int64(),
    "quarantined_share": pl.Float64(),
    "entities_per_doc": pl.Float64(),
    "entities_per_100_tokens": pl.Float64(),
    "baseline_days": pl.Int64(),
    "baseline_docs": pl.Int64(),
    "baseline_positive_share": pl.Float64(),
    "baseline_skipped_share": pl.Float64(),
    "centroid_distance": pl.Float64(),
}
#: Columns that are null when there is nothing to compute them from (no scored document, no
#: token counts, no previous day with this source).
QUALITY_NULLABLE = frozenset(
    {
        "positive_share",
        "mean_sentiment_score",
        "entities_per_100_tokens",
        "baseline_positive_share",
        "baseline_skipped_share",
        "centroid_distance",
    }
)
#: The figures the report's trend chart draws, with their titles.
TREND_FIGURES = {
    "positive_share": "positive share (of scored)",
    "skipped_share": "skipped share",
    "entities_per_doc": "entities per document",
    "centroid_distance": "centroid distance to previous 7 days",
}

_PREDICTION_COLUMNS = ["doc_id", "source", "sentiment_label", "skipped_reason"]


@dataclass(frozen=True)
class SourceStats:
    """What one day contributes to a baseline, per source: counts and the embedding sum."""

    n_docs: int
    n_scored: int
    n_positive: int
    n_skipped: int
    embedding_sum: np.ndarray | None  # float64 sum of the day's embeddings (None: none)
    n_embedded: int


def day_stats(predictions: pl.DataFrame, features: pl.DataFrame) -> dict[str, SourceStats]:
    """Per source: documents, scored, positive and skipped counts and the sum of the
    embeddings of one day. `predictions` needs doc_id, source, sentiment_label and
    skipped_reason; `features` doc_id and embedding (other columns are ignored)."""
    if predictions.is_empty():
        return {}
    docs = predictions.select(_PREDICTION_COLUMNS).with_columns(
        pl.col("source").fill_null("unknown")
    )
    counts = docs.group_by("source").agg(
        pl.len().alias("n_docs"),
        pl.col("sentiment_label").is_not_null().sum().alias("n_scored"),
        (pl.col("sentiment_label") == "positive").sum().alias("n_positive"),
        pl.col("skipped_reason").is_not_null().sum().alias("n_skipped"),
    )
    sums = _embedding_sums(docs, features)
    return {
        row["source"]: SourceStats(
            n_docs=row["n_docs"],
            n_scored=row["n_scored"],
            n_positive=row["n_positive"],
            n_skipped=row["n_skipped"],
            embedding_sum=sums.get(row["source"], (None, 0))[0],
            n_embedded=sums.get(row["source"], (None, 0))[1],
        )
        for row in counts.iter_rows(named=True)
    }


def _embedding_sums(
    docs: pl.DataFrame, features: pl.DataFrame
) -> dict[str, tuple[np.ndarray, int]]:
    if features.is_empty() or "embedding" not in features.columns:
        return {}
    joined = docs.select("doc_id", "source").join(
        features.select("doc_id", "embedding"), on="doc_id", how="inner"
    )
    sums = {}
    for (source,), group in joined.group_by("source"):
        vectors = group["embedding"].to_numpy().astype(np.float64)
        sums[str(source)] = (vectors.reshape(group.height, -1).sum(axis=0), group.height)
    return sums


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float | None:
    """1 - cos(a, b); None when either vector is zero (no direction to compare)."""
    norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    if norms == 0.0:
        return None
    return float(np.clip(1.0 - np.dot(a, b) / norms, 0.0, 2.0))  # rounding stays in range


def pooled(history: Iterable[dict[str, SourceStats]], source: str) -> tuple[int, SourceStats]:
    """The baseline of `source` over previous days: (days with this source, pooled stats).

    Pooled over documents: the centroid is the mean of every document's embedding of those
    days (a busy day weighs more than a quiet one), the shares are over all their documents."""
    days = [stats[source] for stats in history if source in stats]
    sums = [s.embedding_sum for s in days if s.embedding_sum is not None]
    return len(days), SourceStats(
        n_docs=sum(s.n_docs for s in days),
        n_scored=sum(s.n_scored for s in days),
        n_positive=sum(s.n_positive for s in days),
        n_skipped=sum(s.n_skipped for s in days),
        embedding_sum=np.sum(sums, axis=0) if sums else None,
        n_embedded=sum(s.n_embedded for s in days),
    )


def quarantine_sources(quarantine: pl.DataFrame, raw: pl.DataFrame) -> pl.Series:
    """The source of each quarantined row: its document's source when the raw stage kept the
    document (rows quarantined after ingest); otherwise the one source of its file's documents;
    otherwise the source its file gives by default (text files: `text_files`, other files:
    the file's stem, as ingest does)."""
    if quarantine.is_empty():
        return pl.Series("source", [], dtype=pl.String)
    by_doc = dict(raw.select("doc_id", "source").iter_rows()) if raw.height else {}
    by_file: dict[str, str | None] = {}
    if raw.height and "file" in raw.columns:
        per_file = raw.group_by("file").agg(pl.col("source").unique())
        by_file = {f: s[0] if len(s) == 1 else None for f, s in per_file.iter_rows()}
    sources = []
    for doc_id, file in quarantine.select("doc_id", "file").iter_rows():
        source = by_doc.get(doc_id) if doc_id is not None else None
        if source is None and file is not None:
            source = by_file.get(file) or _default_source(file)
        sources.append(source or "unknown")
    return pl.Series("source", sources, dtype=pl.String)


def _default_source(file: str) -> str:
    path = PurePosixPath(file)
    return TEXT_FILES_SOURCE if path.suffix.lower() in TEXT_SUFFIXES else path.stem


def quality_figures(
    day: date,
    predictions: pl.DataFrame,
    features: pl.DataFrame,
    *,
    history: Sequence[dict[str, SourceStats]] = (),
    tokens: pl.DataFrame | None = None,
    quarantine_source: pl.Series | None = None,
) -> pl.DataFrame:
    """One row per source of the day (`QUALITY_SCHEMA`).

    `history` holds `day_stats` of the previous days (at most `BASELINE_DAYS`; fewer at the
    start of the data, none on the first day: then the baseline columns are null and
    `baseline_days` is 0). `tokens` (doc_id, n_tokens) gives the entity density per 100 tokens;
    `quarantine_source` the source of each of the day's quarantined rows
    (`quarantine_sources`). A source with only quarantined rows gets a row with 0 documents.
    """
    today = day_stats(predictions, features)
    quarantined = (
        dict(quarantine_source.value_counts().iter_rows())
        if quarantine_source is not None and quarantine_source.len()
        else {}
    )
    per_source = _per_source_figures(predictions, tokens)
    rows = []
    for source in sorted(set(today) | set(quarantined)):
        stats = today.get(source) or SourceStats(0, 0, 0, 0, None, 0)
        n_days, base = pooled(history[-BASELINE_DAYS:], source)
        figures = per_source.get(source, {})
        n_quarantined = int(quarantined.get(source, 0))
        distance = None
        if stats.embedding_sum is not None and base.embedding_sum is not None:
            distance = cosine_distance(stats.embedding_sum, base.embedding_sum)
        rows.append(
            {
                "ingest_date": day,
                "source": source,
                "n_docs": stats.n_docs,
                "n_scored": stats.n_scored,
                "label_mix": figures.get("label_mix", []),
                "positive_share": _share(stats.n_positive, stats.n_scored),
                "mean_sentiment_score": figures.get("mean_sentiment_score"),
                "skipped_share": _share(stats.n_skipped, stats.n_docs) or 0.0,
                "n_quarantined": n_quarantined,
                "quarantined_share": _share(n_quarantined, stats.n_docs + n_quarantined) or 0.0,
                "entities_per_doc": figures.get("entities_per_doc", 0.0),
                "entities_per_100_tokens": figures.get("entities_per_100_tokens"),
                "baseline_days": n_days,
                "baseline_docs": base.n_docs,
                "baseline_positive_share": _share(base.n_positive, base.n_scored),
                "baseline_skipped_share": _share(base.n_skipped, base.n_docs),
                "centroid_distance": distance,
            }
        )
    return pl.DataFrame(rows, schema=QUALITY_SCHEMA, orient="row")


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _per_source_figures(
    predictions: pl.DataFrame, tokens: pl.DataFrame | None
) -> dict[str, dict[str, object]]:
    """Label mix, mean score and entity densities per source."""
    if predictions.is_empty():
        return {}
    docs = predictions.with_columns(
        pl.col("source").fill_null("unknown"),
        pl.col("entities").list.len().fill_null(0).alias("n_entities"),
    )
    if tokens is not None and not tokens.is_empty():
        docs = docs.join(tokens.select("doc_id", "n_tokens"), on="doc_id", how="left")
    else:
        docs = docs.with_columns(pl.lit(None, dtype=pl.Int64).alias("n_tokens"))
    counted = docs.filter(pl.col("n_tokens").is_not_null())
    figures = docs.group_by("source").agg(
        pl.col("sentiment_score").filter(pl.col("sentiment_label").is_not_null()).mean(),
        pl.col("n_entities").mean().alias("entities_per_doc"),
    )
    density = counted.group_by("source").agg(
        (100 * pl.col("n_entities").sum() / pl.col("n_tokens").sum()).alias("per_100")
    )
    labels = (
        docs.group_by("source", pl.col("sentiment_label").fill_null(SKIPPED_LABEL).alias("label"))
        .len("n_docs")
        .sort("source", "label")
    )
    mix: dict[str, list[dict[str, object]]] = {}
    for source, label, n in labels.iter_rows():
        mix.setdefault(source, []).append({"label": label, "n_docs": n})
    per_100 = dict(density.iter_rows())
    return {
        source: {
            "label_mix": mix.get(source, []),
            "mean_sentiment_score": score,
            "entities_per_doc": float(per_doc),
            "entities_per_100_tokens": per_100.get(source),
        }
        for source, score, per_doc in figures.iter_rows()
    }


# --------------------------------------------------------------------------------------
# The shift judgement
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """How far a day may move from its previous days before the check warns."""

    centroid_noise_factor: float = CENTROID_NOISE_FACTOR
    positive_share_shift: float = MAX_POSITIVE_SHARE_SHIFT
    skipped_share_shift: float = MAX_SKIPPED_SHARE_SHIFT
    min_docs: int = MIN_DOCS_JUDGED


@dataclass(frozen=True)
class ShiftVerdict:
    findings: list[str]  # one sentence per figure past its threshold
    judged: list[str]  # sources with enough documents today and in their baseline
    not_judged: list[str]  # sources too small, or without previous days

    @property
    def passed(self) -> bool:
        return not self.findings


def centroid_limit(n_docs: int, baseline_docs: int, factor: float = CENTROID_NOISE_FACTOR) -> float:
    """The centroid distance above which a day moved more than sampling noise explains: the
    expected squared distance between the means of two samples of n and m documents from the
    same distribution grows with 1/n + 1/m."""
    return factor * (1 / max(n_docs, 1) + 1 / max(baseline_docs, 1))


def shift_findings(quality: pl.DataFrame, thresholds: Thresholds | None = None) -> ShiftVerdict:
    """Judge each source of a day's `quality` rows against its baseline."""
    limits = thresholds or Thresholds()
    findings: list[str] = []
    judged: list[str] = []
    not_judged: list[str] = []
    for row in quality.sort("source").iter_rows(named=True):
        source = row["source"]
        if row["baseline_days"] == 0 or min(row["n_docs"], row["baseline_docs"]) < limits.min_docs:
            not_judged.append(source)
            continue
        judged.append(source)
        distance = row["centroid_distance"]
        limit = centroid_limit(row["n_docs"], row["baseline_docs"], limits.centroid_noise_factor)
        if distance is not None and distance > limit:
            findings.append(
                f"{source}: embedding centroid moved {distance:.4f} (cosine distance) from the "
                f"previous {row['baseline_days']} day(s), above {limit:.4f}"
            )
        for figure, limit in (
            ("positive_share", limits.positive_share_shift),
            ("skipped_share", limits.skipped_share_shift),
        ):
            now, before = row[figure], row[f"baseline_{figure}"]
            if now is not None and before is not None and abs(now - before) > limit:
                findings.append(
                    f"{source}: {figure.replace('_', ' ')} {now:.1%} vs {before:.1%} over the "
                    f"previous {row['baseline_days']} day(s), a shift above {limit:.0%}"
                )
    return ShiftVerdict(findings=findings, judged=judged, not_judged=not_judged)
