"""The daily report: charts, a self-contained HTML page and exports of one day's results.

Everything here is plain Python on polars frames (no Dagster), so it can be tested and
run by hand. Charts use `matplotlib.figure.Figure` directly (no pyplot global state), so
rendering is safe from several threads.
"""

from __future__ import annotations

import base64
import functools
import html
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import polars as pl
from matplotlib.axes import Axes
from matplotlib.dates import DateFormatter, DayLocator
from matplotlib.figure import Figure

from nlp_assets.atomic import write_atomic
from nlp_assets.kernels.aggregate import NUMERIC_ENTITY_LABELS
from nlp_assets.kernels.quality import TREND_FIGURES, quality_figures

CHARTS = ("label_mix", "sentiment_distribution", "languages", "top_entities")

#: Chart size: 6 x 3.5 in at 90 dpi gives 540 x 315 px PNGs of a few tens of KB.
CHART_SIZE_IN = (6.0, 3.5)
CHART_DPI = 90
#: The quality trend: four small panels (`TREND_FIGURES`), one line per source.
TREND_CHART = "quality_trend"
TREND_SIZE_IN = (9.0, 5.5)
#: How many days (ending with the report's day) the trend chart shows.
TREND_DAYS = 14

HISTOGRAM_BINS = 20
TOP_LANGUAGES = 10
TOP_ENTITIES_CHART = 15
TOP_ITEMS_TABLE = 5
MAX_LABEL_CHARS = 40

#: How a null sentiment label (the document was skipped) is shown.
SKIPPED = "skipped"
LABEL_COLOURS = {"positive": "#2e7d32", "negative": "#c62828", SKIPPED: "#9e9e9e"}
OTHER_COLOUR = "#1565c0"

MANIFEST_SCHEMA: dict[str, pl.DataType] = {
    "ingest_date": pl.Date(),
    "artifact": pl.String(),
    "path": pl.String(),
    "format": pl.String(),
    "bytes": pl.Int64(),
}

EXPORT_FORMATS = ("parquet", "json", "csv")

#: Files under `out_dir` that `write_report` owns: anything matching and not written by
#: the current run is stale and removed. Other files in `out_dir` are left alone.
OWNED_GLOBS = ("report.html", "charts/*.png", *(f"exports/*.{fmt}" for fmt in EXPORT_FORMATS))


# --------------------------------------------------------------------------------------
# Charts
# --------------------------------------------------------------------------------------


def render_charts(predictions: pl.DataFrame) -> dict[str, bytes]:
    """Render every chart in `CHARTS` for one day's predictions: name -> PNG bytes."""
    drawers: dict[str, Callable[[Axes, pl.DataFrame], None]] = {
        "label_mix": _draw_label_mix,
        "sentiment_distribution": _draw_sentiment_distribution,
        "languages": _draw_languages,
        "top_entities": _draw_top_entities,
    }
    charts = {}
    for name in CHARTS:
        fig = Figure(figsize=CHART_SIZE_IN, dpi=CHART_DPI, layout="constrained")
        drawers[name](fig.add_subplot(), predictions)
        charts[name] = _png(fig)
    return charts


def label_counts(predictions: pl.DataFrame) -> pl.DataFrame:
    """Documents per sentiment label, null shown as "skipped" (positive, negative first)."""
    order = {"positive": 0, "negative": 1, SKIPPED: 3}
    counts = (
        predictions.group_by(pl.col("sentiment_label").fill_null(SKIPPED).alias("label"))
        .len("n_docs")
        .to_dicts()
    )
    counts.sort(key=lambda row: (order.get(row["label"], 2), row["label"]))
    return pl.DataFrame(counts, schema={"label": pl.String(), "n_docs": pl.Int64()})


def language_counts(predictions: pl.DataFrame, top: int = TOP_LANGUAGES) -> pl.DataFrame:
    """Documents per language, most frequent first; languages past `top` summed as "other"."""
    counts = (
        predictions.group_by(pl.col("lang").fill_null("unknown"))
        .len("n_docs")
        .sort(["n_docs", "lang"], descending=[True, False])
        .cast({"n_docs": pl.Int64})
    )
    if counts.height <= top:
        return counts
    rest = counts.slice(top)["n_docs"].sum()
    return pl.concat([counts.head(top), pl.DataFrame({"lang": ["other"], "n_docs": [rest]})])


def entity_counts(predictions: pl.DataFrame, top: int = TOP_ENTITIES_CHART) -> pl.DataFrame:
    """The `top` most frequent named entities (text + label) over all of the day's documents;
    numbers and dates are left out, as in the aggregates."""
    schema = {"text": pl.String(), "label": pl.String(), "count": pl.Int64()}
    entities = predictions.select("entities").explode("entities").drop_nulls()
    if entities.is_empty():
        return pl.DataFrame(schema=schema)
    return (
        entities.unnest("entities")
        .filter(~pl.col("label").is_in(NUMERIC_ENTITY_LABELS))
        .group_by("text", "label")
        .len("count")
        .sort(["count", "text", "label"], descending=[True, False, False])
        .head(top)
        .cast(schema)  # type: ignore[arg-type]
    )


def _draw_label_mix(ax: Axes, predictions: pl.DataFrame) -> None:
    ax.set_title("Documents per sentiment label")
    counts = label_counts(predictions)
    if counts.is_empty():
        _no_data(ax)
        return
    labels = counts["label"].to_list()
    colours = [LABEL_COLOURS.get(label, OTHER_COLOUR) for label in labels]
    positions = range(len(labels))
    bars = ax.bar(positions, counts["n_docs"].to_list(), color=colours)
    ax.bar_label(bars)
    ax.margins(y=0.12)  # room for the count labels
    ax.set_xticks(positions, labels=[_short(label) for label in labels], parse_math=False)
    ax.set_ylabel("documents")


def _draw_sentiment_distribution(ax: Axes, predictions: pl.DataFrame) -> None:
    ax.set_title("Sentiment score, P(positive)")
    scores = predictions["sentiment_score"].drop_nulls().drop_nans().to_list()
    if not scores:
        _no_data(ax)
        return
    ax.hist(scores, bins=HISTOGRAM_BINS, range=(0.0, 1.0), color=OTHER_COLOUR)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("score")
    ax.set_ylabel("documents")


def _draw_languages(ax: Axes, predictions: pl.DataFrame) -> None:
    ax.set_title(f"Documents per language (top {TOP_LANGUAGES})")
    counts = language_counts(predictions)
    if counts.is_empty():
        _no_data(ax)
        return
    positions = range(counts.height)
    bars = ax.bar(positions, counts["n_docs"].to_list(), color=OTHER_COLOUR)
    ax.bar_label(bars)
    ax.margins(y=0.12)  # room for the count labels
    labels = [_short(lang) for lang in counts["lang"].to_list()]
    ax.set_xticks(positions, labels=labels, parse_math=False)
    ax.set_ylabel("documents")


def _draw_top_entities(ax: Axes, predictions: pl.DataFrame) -> None:
    ax.set_title(f"Top {TOP_ENTITIES_CHART} entities")
    counts = entity_counts(predictions)
    if counts.is_empty():
        _no_data(ax)
        return
    labels = [f"{_short(row['text'])} ({row['label']})" for row in counts.iter_rows(named=True)]
    positions = range(counts.height)
    ax.barh(positions, counts["count"].to_list(), color=OTHER_COLOUR)
    ax.set_yticks(positions, labels=labels, parse_math=False, fontsize=7)
    ax.invert_yaxis()  # most frequent on top
    ax.set_xlabel("mentions")


def render_quality_trend(quality: pl.DataFrame, day: date, days: int = TREND_DAYS) -> bytes:
    """The quality trend as PNG: one panel per figure of `TREND_FIGURES`, one line per source,
    over the `days` days ending with `day` (from the first of them with figures)."""
    fig = Figure(figsize=TREND_SIZE_IN, dpi=CHART_DPI, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).flatten()
    first = day - timedelta(days=days - 1)
    window = quality.filter(pl.col("ingest_date").is_between(first, day)).sort("ingest_date")
    sources = sorted(window["source"].unique().to_list()) if window.height else []
    # polars types `Series.min()` as any scalar; on this Date column it is a `date`.
    start = cast(date, window["ingest_date"].min()) if window.height else first
    half_day = timedelta(hours=12)
    for ax, (column, title) in zip(axes, TREND_FIGURES.items(), strict=True):
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        if not sources:
            _no_data(ax)
            continue
        for source in sources:
            line = window.filter(pl.col("source") == source).drop_nulls(column)
            if line.height:
                ax.plot(
                    line["ingest_date"].to_list(),
                    line[column].to_list(),
                    marker="o",
                    markersize=3,
                    label=_short(source),
                )
        ax.set_xlim(_midnight(start) - half_day, _midnight(day) + half_day)  # points off the edges
        ax.xaxis.set_major_locator(DayLocator(interval=1 + (day - start).days // 7))
        ax.xaxis.set_major_formatter(DateFormatter("%m-%d"))
    if sources:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    return _png(fig)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=14, color="#757575")
    ax.set_axis_off()


def _short(text: object) -> str:
    text = str(text)
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=CHART_DPI)
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --------------------------------------------------------------------------------------
# Markdown preview (for Dagster asset metadata)
# --------------------------------------------------------------------------------------


def markdown_preview(day: date, predictions: pl.DataFrame, chart_png: bytes) -> str:
    """A short markdown summary of the day with `chart_png` embedded as a data URI."""
    total = predictions.height
    labels = dict(label_counts(predictions).iter_rows())

    def share(label: str) -> str:
        return f"{labels.get(label, 0) / total:.0%}" if total else "0%"

    languages = language_counts(predictions, top=5).iter_rows()
    langs = ", ".join(f"{html.escape(lang)} ({n})" for lang, n in languages) or "none"
    return (
        f"### NLP report {day.isoformat()}\n\n"
        f"**{total} docs**: {share('positive')} positive, {share('negative')} negative, "
        f"{labels.get(SKIPPED, 0)} skipped; languages: {langs}\n\n"
        f"![label mix]({_data_uri(chart_png)})\n"
    )


# --------------------------------------------------------------------------------------
# The report and exports
# --------------------------------------------------------------------------------------


def write_report(
    day: date,
    predictions: pl.DataFrame,
    aggregates: pl.DataFrame,
    out_dir: Path,
    quarantine_counts: Mapping[str, int] | None = None,
    quality: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Write the day's report, charts and exports into `out_dir`; return the manifest.

    `quality` holds the `quality` asset's rows of the last days (the report's day included):
    given, the report gets a "Quality" section with the day's figures per source and the
    trend chart (`chart_quality_trend`) of the days up to the report's day.

    Each file is written to a temporary name and then renamed, so a failed run leaves the
    previous files in place. Files of ours that this run did not write (see `OWNED_GLOBS`)
    are removed at the end. The manifest has one row per file (`MANIFEST_SCHEMA`).
    """
    out_dir = Path(out_dir).resolve()
    written: list[dict[str, Any]] = []

    def record(artifact: str, path: Path, fmt: str) -> None:
        written.append(
            {
                "ingest_date": day,
                "artifact": artifact,
                "path": str(path),
                "format": fmt,
                "bytes": path.stat().st_size,
            }
        )

    charts = render_charts(predictions)
    for name, png in charts.items():
        path = out_dir / "charts" / f"{name}.png"
        write_atomic(path, functools.partial(Path.write_bytes, data=png))
        record(f"chart_{name}", path, "png")
    trend = None
    if quality is not None:
        trend = render_quality_trend(quality, day)
        path = out_dir / "charts" / f"{TREND_CHART}.png"
        write_atomic(path, lambda tmp: tmp.write_bytes(trend))
        record(f"chart_{TREND_CHART}", path, "png")

    for table_name, frame in (("predictions", predictions), ("aggregates", aggregates)):
        for fmt, path in _write_exports(frame, out_dir / "exports", table_name):
            record(f"{table_name}_{fmt}", path, fmt)

    page = render_html(day, predictions, aggregates, charts, quarantine_counts, quality, trend)
    path = out_dir / "report.html"
    write_atomic(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    record("report_html", path, "html")

    _remove_stale(out_dir, keep={Path(row["path"]) for row in written})
    return pl.DataFrame(written, schema=MANIFEST_SCHEMA)


def _write_exports(frame: pl.DataFrame, folder: Path, name: str) -> list[tuple[str, Path]]:
    """Write `frame` as parquet, JSON (array of records) and CSV (nested columns as JSON)."""
    writers: dict[str, Callable[[Path], object]] = {
        "parquet": frame.write_parquet,
        "json": frame.write_json,
        "csv": csv_ready(frame).write_csv,
    }
    paths = []
    for fmt in EXPORT_FORMATS:
        path = folder / f"{name}.{fmt}"
        write_atomic(path, writers[fmt])
        paths.append((fmt, path))
    return paths


#: A cell starting with one of these is run as a formula by spreadsheets (OWASP "CSV
#: injection"): `=`, `+`, `-`, `@`, tab, carriage return.
FORMULA_START = r"^[=+\-@\t\r]"


def csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` for a CSV export: every list/struct column encoded as a JSON string (null stays
    null), and every text cell that a spreadsheet would run as a formula prefixed with `'`
    (shown as text, the formula never runs). Numbers stay numbers; Parquet and JSON exports
    are written from the frame itself and keep the exact values."""
    return frame.with_columns(
        _json_encode(name) for name, dtype in frame.schema.items() if dtype.is_nested()
    ).with_columns(
        _neutralise_formula(name)
        for name, dtype in frame.schema.items()
        if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
    )


def _neutralise_formula(column: str) -> pl.Expr:
    text = pl.col(column).cast(pl.String)
    return (
        pl.when(text.str.contains(FORMULA_START))
        .then(pl.lit("'") + text)
        .otherwise(text)
        .alias(column)
    )


def _json_encode(column: str) -> pl.Expr:
    # polars can only JSON-encode structs, so wrap the value as {"v": value} and strip the
    # wrapper off again: what remains is the JSON of the value itself.
    wrapped = pl.struct(pl.col(column).alias("v")).struct.json_encode()
    encoded = wrapped.str.strip_prefix('{"v":').str.strip_suffix("}")
    return pl.when(pl.col(column).is_not_null()).then(encoded).alias(column)


def _remove_stale(out_dir: Path, keep: set[Path]) -> None:
    for pattern in OWNED_GLOBS:
        for path in out_dir.glob(pattern):
            if path.is_file() and path not in keep:
                path.unlink()


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #212121; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #e0e0e0; padding-bottom: 0.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #e0e0e0; padding: 0.3rem 0.6rem; text-align: left;
         vertical-align: top; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
.charts figure { margin: 0; }
.charts figcaption { font-size: 0.8rem; color: #616161; }
.muted { color: #757575; }
"""


def render_html(
    day: date,
    predictions: pl.DataFrame,
    aggregates: pl.DataFrame,
    charts: Mapping[str, bytes],
    quarantine_counts: Mapping[str, int] | None = None,
    quality: pl.DataFrame | None = None,
    trend_png: bytes | None = None,
) -> str:
    """The self-contained report page (inline CSS, charts as data URIs, all text escaped)."""
    sections = [
        f"<h1>NLP report {_esc(day.isoformat())}</h1>",
        '<p class="muted">Daily sentiment and named-entity results.</p>',
        "<h2>Documents</h2>",
        _documents_html(predictions),
        "<h2>Charts</h2>",
        _charts_html(charts),
        "<h2>Sentiment by source</h2>",
        _sentiment_by_source_html(day, predictions),
        "<h2>Aggregates</h2>",
        _aggregates_html(aggregates),
    ]
    if quality is not None:
        sections += ["<h2>Quality</h2>", _quality_html(day, quality, trend_png)]
    if quarantine_counts is not None:
        sections += ["<h2>Quarantine</h2>", _quarantine_html(quarantine_counts)]
    sections += ["<h2>Models</h2>", _models_html(predictions)]
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>NLP report {_esc(day.isoformat())}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _documents_html(predictions: pl.DataFrame) -> str:
    per_source = (
        predictions.group_by(pl.col("source").fill_null("unknown"))
        .agg(
            pl.len().alias("docs"),
            pl.col("is_duplicate").fill_null(False).sum().alias("duplicates"),
            pl.col("sentiment_label").is_null().sum().alias("skipped"),
        )
        .sort("source")
    )
    totals = [
        ("total", predictions.height),
        ("duplicates", int(predictions["is_duplicate"].fill_null(False).sum())),
        ("skipped", predictions["sentiment_label"].null_count()),
    ]
    summary = _table(["", "documents"], totals)
    sources = _table(["source", "documents", "duplicates", "skipped"], per_source.iter_rows())
    return f"{summary}\n<h3>Per source</h3>\n{sources}"


def _charts_html(charts: Mapping[str, bytes]) -> str:
    figures = [
        f'<figure><img src="{_data_uri(png)}" alt="{_esc(name)}">'
        f"<figcaption>{_esc(name.replace('_', ' '))}</figcaption></figure>"
        for name, png in charts.items()
    ]
    return '<div class="charts">\n' + "\n".join(figures) + "\n</div>"


def _aggregates_html(aggregates: pl.DataFrame) -> str:
    if aggregates.is_empty():
        return '<p class="muted">No aggregates for this day.</p>'
    rows = []
    ordered = aggregates.sort(["lang", "sentiment_label"], nulls_last=True)
    for row in ordered.iter_rows(named=True):
        score = row["mean_sentiment_score"]
        entities = _top(row["top_entities"], lambda e: f"{e['text']} ({e['label']})")
        ngrams = _top(row["top_ngrams"], lambda g: g["ngram"])
        rows.append(
            (
                row["lang"],
                row["sentiment_label"] or SKIPPED,
                row["n_docs"],
                "–" if score is None else f"{score:.3f}",
                entities,
                ngrams,
            )
        )
    headers = ["lang", "label", "n_docs", "mean score", "top entities", "top n-grams"]
    return _table(headers, rows)


def sentiment_by_source(day: date, predictions: pl.DataFrame) -> pl.DataFrame:
    """Per source: documents, documents per label (skipped: no label), positive share of the
    scored documents and their mean P(positive); the figures of the `quality` asset."""
    figures = quality_figures(day, predictions, pl.DataFrame())
    counts = [{m["label"]: m["n_docs"] for m in mix} for mix in figures["label_mix"].to_list()]
    return figures.select(
        "source",
        "n_docs",
        *(
            pl.Series(label, [c.get(label, 0) for c in counts], dtype=pl.Int64)
            for label in ("positive", "negative", SKIPPED)
        ),
        "positive_share",
        "mean_sentiment_score",
    )


def _sentiment_by_source_html(day: date, predictions: pl.DataFrame) -> str:
    if predictions.is_empty():
        return '<p class="muted">No documents this day.</p>'
    rows = [
        (*row[:5], _percent(row[5]), _fixed(row[6]))
        for row in sentiment_by_source(day, predictions).iter_rows()
    ]
    headers = [
        "source",
        "documents",
        "positive",
        "negative",
        SKIPPED,
        "positive share",
        "mean score",
    ]
    return (
        '<p class="muted">Positive share and mean P(positive) are over the scored documents.</p>\n'
        + _table(headers, rows)
    )


def _quality_html(day: date, quality: pl.DataFrame, trend_png: bytes | None) -> str:
    today = quality.filter(pl.col("ingest_date") == day).sort("source")
    rows = [
        (
            row["source"],
            row["n_docs"],
            _percent(row["positive_share"]),
            _percent(row["skipped_share"]),
            _percent(row["quarantined_share"]),
            _fixed(row["entities_per_doc"], 2),
            _fixed(row["entities_per_100_tokens"], 2),
            row["baseline_days"],
            _fixed(row["centroid_distance"], 4),
        )
        for row in today.iter_rows(named=True)
    ]
    headers = [
        "source",
        "documents",
        "positive share",
        "skipped",
        "quarantined",
        "entities / doc",
        "entities / 100 tokens",
        "previous days",
        "centroid distance",
    ]
    table = (
        _table(headers, rows) if rows else '<p class="muted">No quality figures for this day.</p>'
    )
    chart = ""
    if trend_png is not None:
        chart = (
            f'<div class="charts"><figure><img src="{_data_uri(trend_png)}" '
            f'alt="{TREND_CHART}"><figcaption>quality trend, last {TREND_DAYS} days'
            "</figcaption></figure></div>"
        )
    note = (
        '<p class="muted">Centroid distance: cosine distance of the day\'s mean embedding from '
        "the mean of the previous seven days' documents (blank on a source's first day).</p>"
    )
    return f"{table}\n{note}\n{chart}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _fixed(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _top(items: list[dict[str, Any]] | None, describe: Callable[[dict[str, Any]], str]) -> str:
    """The `TOP_ITEMS_TABLE` most counted items as "name ×count, ..." (plain text)."""
    best = sorted(items or [], key=lambda item: -(item["count"] or 0))[:TOP_ITEMS_TABLE]
    return ", ".join(f"{describe(item)} ×{item['count']}" for item in best)


def _quarantine_html(quarantine_counts: Mapping[str, int]) -> str:
    if not quarantine_counts:
        return '<p class="muted">No rows quarantined.</p>'
    return _table(["stage", "rows"], sorted(quarantine_counts.items()))


def _models_html(predictions: pl.DataFrame) -> str:
    rows: list[tuple[Any, ...]] = []
    for task, prefix in (("sentiment", "sentiment_model"), ("ner", "ner_model")):
        used = (
            predictions.group_by(prefix, f"{prefix}_version")
            .len("docs")
            .drop_nulls(prefix)
            .sort(prefix, f"{prefix}_version")
        )
        rows += [(task, *row) for row in used.iter_rows()]
    if not rows:
        return '<p class="muted">No models ran.</p>'
    return _table(["task", "model", "version", "documents"], rows)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; every cell is escaped, numbers are right-aligned."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    lines = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_esc(value)}</td>'
            if isinstance(value, int | float) and not isinstance(value, bool)
            else f"<td>{_esc(value)}</td>"
            for value in row
        )
        lines.append(f"<tr>{cells}</tr>")
    body = "\n".join(lines)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value))
