"""The sample landing corpus and the labelled sentiment set built from registry packages."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from dev import sample_corpus as sc
from nlp_assets.kernels import pattern_corpora

REPO_ROOT = Path(__file__).parents[2]
DAY_FILES = {sc.BBC_FILE, sc.DRUG_FILE, sc.MOVIE_FILE, sc.MULTILINGUAL_FILE, sc.FEEDBACK_FILE}


@pytest.fixture(scope="module")
def corpora_dir() -> Path:
    return sc.fetch_pattern_corpora(REPO_ROOT / "data" / "cache")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, corpora_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("build1")
    sc.build_labelled_sentiment(corpora_dir, root / "labelled" / "sentiment.parquet")
    sc.build_sample_corpus(root / "landing", corpora_dir)
    return root


def _records(day_dir: Path) -> list[dict]:
    """Every valid record of one landing day (TXT files get their source, id and mtime)."""
    records: list[dict] = []
    for path in sorted(day_dir.iterdir()):
        if path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        elif path.suffix == ".csv":
            records.extend(pl.read_csv(path, infer_schema=False).to_dicts())
        elif path.suffix == ".parquet":
            records.extend(pl.read_parquet(path).to_dicts())
        elif path.suffix == ".txt":
            mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
            text = path.read_bytes().decode("utf-8", errors="replace")
            records.append(
                {
                    "id": path.stem,
                    "text": text,
                    "source": "bbc_news",
                    "timestamp": mtime.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            )
    return records


@pytest.fixture(scope="module")
def records_by_day(built: Path) -> dict[date, list[dict]]:
    return {day: _records(built / "landing" / day.isoformat()) for day in sc.SAMPLE_DAYS}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_sample_days_are_five_consecutive_days() -> None:
    expected = tuple(date(2026, 11, d) for d in range(16, 21))
    assert expected == sc.SAMPLE_DAYS


def test_every_day_has_the_expected_files(built: Path) -> None:
    landing = built / "landing"
    assert sorted(p.name for p in landing.iterdir()) == [d.isoformat() for d in sc.SAMPLE_DAYS]
    for day in sc.SAMPLE_DAYS:
        names = {p.name for p in (landing / day.isoformat()).iterdir()}
        txt = {n for n in names if n.endswith(".txt")}
        assert names - txt == DAY_FILES
        assert len(txt) == sc.BBC_TXT_PER_DAY
        assert all(n.startswith("bbc_") and n.count("_") == 2 for n in txt)


def test_ids_unique_per_source(records_by_day: dict[date, list[dict]]) -> None:
    ids = Counter((r["source"], r["id"]) for recs in records_by_day.values() for r in recs)
    assert [key for key, n in ids.items() if n > 1] == []


def test_timestamps_fall_on_the_folder_day(records_by_day: dict[date, list[dict]]) -> None:
    for day, records in records_by_day.items():
        for record in records:
            assert record["timestamp"].endswith("Z"), record["id"]
            moment = datetime.fromisoformat(record["timestamp"])
            assert moment.astimezone(UTC).date() == day, record["id"]


def test_totals_match_the_sources(
    records_by_day: dict[date, list[dict]], corpora_dir: Path
) -> None:
    counts = Counter(r["source"] for recs in records_by_day.values() for r in recs)
    assert counts["bbc_news"] == len(sc.read_bbc_articles()) == 2225
    assert counts["drug_reviews"] == len(sc.read_drug_reviews(sc.DRUG_TEST))
    assert counts["movie_reviews"] == len(
        pattern_corpora.read_polarity_csv(corpora_dir / pattern_corpora.PANG_LEE_REVIEWS)
    )
    assert counts["movie_reviews"] == 1500
    for lang in pattern_corpora.FOREIGN_REVIEWS:
        assert counts[f"reviews_{lang}"] == pattern_corpora.FOREIGN_SAMPLE_PER_LANG
    assert counts["web_feedback"] == 7 * len(sc.SAMPLE_DAYS)
    assert 3000 < sum(counts.values()) < 6000


def test_movie_reviews_land_once(records_by_day: dict[date, list[dict]], corpora_dir: Path) -> None:
    movies = [r for recs in records_by_day.values() for r in recs if r["source"] == "movie_reviews"]
    landed = Counter(r["text"] for r in movies)
    source = [
        text
        for _, text in pattern_corpora.read_polarity_csv(
            corpora_dir / pattern_corpora.PANG_LEE_REVIEWS
        )
    ]
    assert landed == Counter(source)


def test_web_feedback_is_messy_on_purpose(built: Path) -> None:
    for day in sc.SAMPLE_DAYS:
        lines = (built / "landing" / day.isoformat() / sc.FEEDBACK_FILE).read_text().splitlines()
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        assert len(lines) - len(parsed) == 1
        texts = Counter(r["text"] for r in parsed)
        assert sorted(texts.values())[-1] == 2  # one exact duplicate text
        assert len({r["id"] for r in parsed}) == len(parsed)
        assert any(not re.sub(r"<[^>]*>|&nbsp;", "", r["text"]).strip() for r in parsed)


def test_drug_reviews_csv_keeps_html_entities(built: Path) -> None:
    texts = []
    for day in sc.SAMPLE_DAYS:
        with (built / "landing" / day.isoformat() / sc.DRUG_FILE).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == ["id", "text", "source", "timestamp", "drug", "condition", "rating"]
        texts += [row["text"] for row in rows]
    assert any("&#039;" in t for t in texts)
    assert not any(t.startswith('"') for t in texts)


def test_building_twice_gives_identical_files(
    built: Path, tmp_path: Path, corpora_dir: Path
) -> None:
    sc.build_labelled_sentiment(corpora_dir, tmp_path / "labelled" / "sentiment.parquet")
    sc.build_sample_corpus(tmp_path / "landing", corpora_dir)
    sc.build_sample_corpus(tmp_path / "landing", corpora_dir)  # over itself: same files again
    assert _files(tmp_path) == _files(built)


def test_labelled_set(built: Path) -> None:
    labelled = pl.read_parquet(built / "labelled" / "sentiment.parquet")
    assert labelled.columns == ["text", "label", "domain"]
    assert set(labelled["label"]) == {"positive", "negative"}
    assert set(labelled["domain"]) == {"movie_sentences", "drug_reviews"}
    assert labelled.filter(pl.col("domain") == "movie_sentences").height == 4000
    assert labelled["text"].n_unique() == labelled.height
    assert labelled["text"].str.strip_chars().str.len_chars().min() > 0


def test_no_labelled_text_in_the_corpus(
    built: Path, records_by_day: dict[date, list[dict]]
) -> None:
    labelled = pl.read_parquet(built / "labelled" / "sentiment.parquet")
    labelled_keys = {pattern_corpora.text_key(t) for t in labelled["text"]}
    corpus_keys = {
        pattern_corpora.text_key(r["text"]) for recs in records_by_day.values() for r in recs
    }
    assert labelled_keys.isdisjoint(corpus_keys)


def test_main_prints_a_summary(
    tmp_path: Path, corpora_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = corpora_dir.parent
    args = ["--landing", str(tmp_path / "landing"), "--labelled", str(tmp_path / "l.parquet")]
    assert sc.main([*args, "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "movie_reviews.parquet" in out and "labelled sentiment set" in out
    assert (tmp_path / "l.parquet").is_file()
