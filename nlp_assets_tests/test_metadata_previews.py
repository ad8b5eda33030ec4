"""Metadata previews are read by every viewer of the Dagster UI: no personal data, and the
document text cannot break or inject into the markdown table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import polars as pl

from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.resources.lake import PREVIEW_ROWS, markdown_preview

DAY = "2026-11-19"
EMAILS = ["jane.doe@example.com", "sam+news@mail.example.co.uk"]
PHONES = ["555-123-4567", "+44 20 7946 0958"]
URLS = ["https://tracker.example/u/123?id=9"]
TEXTS = [
    f"Contact {EMAILS[0]} or call {PHONES[0]} today, it was great.",
    f"Write to {EMAILS[1]}, phone {PHONES[1]} or see {URLS[0]} for more.",
    "A | pipe, `code`, [link](javascript:alert(1)) and <img src=x onerror=alert(1)>\nnext line",
]


def _row_cells(line: str) -> list[str]:
    """The cells of a markdown table row: split on pipes that are not escaped."""
    cells, current, escaped = [], "", False
    for char in line.strip()[1:-1]:
        if char == "|" and not escaped:
            cells.append(current)
            current = ""
        else:
            current += char
        escaped = char == "\\" and not escaped
    return [*cells, current]


def test_materialised_text_previews_hold_no_email_phone_or_url_from_the_input(tmp_path: Path):
    landing = tmp_path / "landing" / DAY
    landing.mkdir(parents=True)
    rows = [{"id": str(i), "text": text} for i, text in enumerate(TEXTS)]
    (landing / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    resources = build_resources(
        lake_dir=str(tmp_path / "lake"),
        landing_dir=str(tmp_path / "landing"),
        reports_dir=str(tmp_path / "reports"),
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            all_assets,
            selection=["raw_text", "cleaned_text"],
            partition_key=DAY,
            instance=instance,
            resources=resources,
        )
    assert result.success
    for stage in ("raw_text", "cleaned_text"):
        [materialization] = result.asset_materializations_for_node(stage)
        preview = materialization.metadata["preview"].value
        for secret in [*EMAILS, *PHONES, *URLS, "jane.doe", "7946"]:
            assert secret not in preview, (stage, secret)
        assert "\\[EMAIL\\]" in preview and "\\[PHONE\\]" in preview
        lines = preview.splitlines()
        assert len(lines) == 2 + len(TEXTS)  # header, rule, one line per document
        width = len(_row_cells(lines[0]))
        assert all(len(_row_cells(line)) == width for line in lines[2:])
        assert "<img" not in preview  # raw_text shows it escaped, cleaning removed the tag
        assert ("&lt;img" in preview) == (stage == "raw_text")
        assert not re.search(r"(?<!\\)[\[\]`]", preview)  # no live link or code span


def test_preview_escapes_markdown_and_html_in_every_cell() -> None:
    frame = pl.DataFrame(
        {
            "text": ["a | b", "`tick`", "[x](http://e.example)", "<b>bold</b> & co", "one\ntwo\r"],
            "n": [1, 2, 3, 4, 5],
        }
    )
    lines = markdown_preview(frame).splitlines()
    assert lines[0] == "| text | n |"
    cells = [_row_cells(line)[0].strip() for line in lines[2:]]
    assert cells == [
        "a \\| b",
        "\\`tick\\`",
        "\\[x\\](\\[URL\\])",
        "&lt;b&gt;bold&lt;/b&gt; &amp; co",
        "one two",
    ]
    assert [_row_cells(line)[1].strip() for line in lines[2:]] == ["1", "2", "3", "4", "5"]


def test_preview_masks_nested_and_binary_columns_and_cuts_after_masking() -> None:
    frame = pl.DataFrame(
        {
            "entities": [[{"text": "bob@example.org", "label": "PERSON"}]],
            "raw": [b'{"text": "call 555-123-4567"}'],
            "long": ["x" * 200 + " jane.doe@example.com"],
            "tail": ["y" * 70 + " jane.doe@example.com"],
        }
    )
    preview = markdown_preview(frame)
    assert "bob@example.org" not in preview and "555-123-4567" not in preview
    assert "\\[EMAIL\\]" in preview and "\\[PHONE\\]" in preview
    assert "jane" not in preview  # masked before the cut: no partial address is left


def test_preview_has_at_most_the_preview_rows() -> None:
    frame = pl.DataFrame({"text": [f"doc {i}" for i in range(PREVIEW_ROWS + 3)]})
    assert len(markdown_preview(frame).splitlines()) == 2 + PREVIEW_ROWS


def test_quarantine_reasons_and_schema_failures_are_masked_too() -> None:
    import pandera.polars as pa

    from nlp_assets.stages.common import quarantine_metadata, schema_check

    reasons = quarantine_metadata(pl.DataFrame({"reason": [f"bad id from {EMAILS[0]}"]}))
    assert EMAILS[0] not in reasons["quarantine_reasons"].value
    assert "\\[EMAIL\\]" in reasons["quarantine_reasons"].value

    schema = pa.DataFrameSchema({"text": pa.Column(str, pa.Check.str_length(max_value=5))})
    failed = schema_check(pl.DataFrame({"text": [f"call {PHONES[0]} now"]}), schema)
    assert not failed.passed
    failures = failed.metadata["failures"].value
    assert PHONES[0] not in failures and "\\[PHONE\\]" in failures
