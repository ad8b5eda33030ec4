"""The backfill benchmark's own logic: unique documents from real sentences, and the Amdahl
split and extrapolation of Spark's wall time (no Spark here)."""

from __future__ import annotations

from datetime import date

import pytest

from bench.backfill import (
    Pool,
    Split,
    TaskSpan,
    amdahl,
    busy_seconds,
    pools_from_texts,
    split_sentences,
    split_stage,
    unique_documents,
)

TEXTS = {
    "news": [
        "Shares rose sharply on Monday. Analysts had expected a fall. The bank said profits "
        "doubled in 2024.\nMarkets in Asia were closed for a holiday.",
        "The minister resigned after the vote. Her deputy takes over until the election.",
    ],
    "reviews": [
        "a slow start , but the last hour is gripping . the lead actor is superb . "
        "i would watch it again .",
        "the plot makes no sense at all . the music, though, is wonderful to hear .",
    ],
    # the same sentence as in news, only in other markup and case: it must not count twice
    "feedback": ["<p>SHARES ROSE SHARPLY ON MONDAY.</p> Delivery took three weeks, far too long."],
}


def test_split_sentences_splits_capitalised_and_spaced_lowercase_text() -> None:
    assert split_sentences(TEXTS["news"][0]) == [
        "Shares rose sharply on Monday.",
        "Analysts had expected a fall.",
        "The bank said profits doubled in 2024.",
        "Markets in Asia were closed for a holiday.",
    ]
    assert split_sentences(TEXTS["reviews"][1]) == [
        "the plot makes no sense at all .",
        "the music, though, is wonderful to hear .",
    ]


def test_pools_keep_each_cleaned_sentence_once_over_all_sources() -> None:
    pools = pools_from_texts(TEXTS)
    every = [s for pool in pools.values() for s in pool.sentences]
    assert "Shares rose sharply on Monday." in pools["news"].sentences
    assert len({s.lower().strip("<p>/ ") for s in every}) == len(every)
    assert not any("SHARES" in s for s in every)


def test_unique_documents_never_repeat_a_text_and_use_only_source_sentences() -> None:
    pools = {
        "a": Pool(tuple(f"Sentence number {i} of pool a." for i in range(12)), per_doc=4),
        "b": Pool(tuple(f"Pool b says thing {i} today." for i in range(9)), per_doc=2),
    }
    # shares follow the pools' sizes (12:9): 80 and 60, near b's limit of 9 * 8
    frame = unique_documents(pools, 140, date(2026, 10, 1), 30)
    assert frame["source"].value_counts().sort("source").rows() == [("a", 80), ("b", 60)]
    assert frame["text"].n_unique() == frame.height
    assert frame["doc_id"].n_unique() == frame.height
    known = {s for pool in pools.values() for s in pool.sentences}
    for text in frame["text"]:
        parts = text.split(". ")
        assert len(parts) >= 2
        assert {p if p.endswith(".") else p + "." for p in parts} <= known
    per_day = frame.group_by("ingest_date").len()
    assert per_day.height == 30
    assert frame["ingest_date"].min() == date(2026, 10, 1)
    assert frame["ingest_date"].max() == date(2026, 10, 30)
    assert set(frame.filter(frame["ingest_date"] == date(2026, 10, 1))["source"]) == {"a", "b"}


def test_unique_documents_refuse_more_than_the_sentences_can_make() -> None:
    pools = {"a": Pool(tuple(f"Sentence number {i} here." for i in range(5)), per_doc=2)}
    unique_documents(pools, 20, date(2026, 10, 1), 2)
    with pytest.raises(ValueError, match="at most 20 unique documents"):
        unique_documents(pools, 21, date(2026, 10, 1), 2)


def test_busy_seconds_counts_overlapping_tasks_once() -> None:
    assert busy_seconds([(0, 4), (2, 6), (10, 11), (10.5, 10.7)]) == pytest.approx(7.0)
    assert busy_seconds([]) == 0.0


def test_split_stage_puts_time_without_tasks_on_the_driver() -> None:
    spans = [
        TaskSpan(102.0, 106.0, "0"),  # two workers busy from 102 to 106 and 107
        TaskSpan(102.0, 107.0, "1"),
        TaskSpan(50.0, 60.0, "0"),  # another stage: outside the window
    ]
    split = split_stage(docs=1_000, started=100.0, finished=110.0, spans=spans)
    assert split.wall_s == pytest.approx(10.0)
    assert split.serial_s == pytest.approx(5.0)  # 100-102 shipping, 107-110 collecting
    assert split.work_s == pytest.approx(9.0)
    assert split.per_worker_docs_s == pytest.approx(1_000 / 9)
    assert split.serial_share == pytest.approx(5 / 14)


def test_amdahl_adds_workers_to_the_parallel_part_only() -> None:
    split = Split(docs=1_000, wall_s=60.0, serial_s=10.0, work_s=100.0)
    assert amdahl(split, 1) == pytest.approx(1_000 / 110)
    assert amdahl(split, 2) == pytest.approx(1_000 / 60)  # reproduces the two-worker wall
    assert amdahl(split, 8) == pytest.approx(1_000 / 22.5)
    assert amdahl(split, 64) == pytest.approx(1_000 / (10 + 100 / 64))
    assert amdahl(split, 10**9) < 1_000 / 10  # never past docs / serial
