"""The model server's callers tokenise with `remote.FastTokenizer` (HF `tokenizers` on the
checkpoint's tokenizer.json) instead of transformers' `AutoTokenizer`: the token ids are the
tokens stage's output and the embedding cache's key, so they must be the same ids, cut the
same way, for any text."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from nlp_assets.kernels.tokenize import tokenize_documents
from nlp_assets.resources.models import default_embedding_model_path
from nlp_assets.resources.models.remote import FastTokenizer


@functools.cache
def tokenizers() -> tuple[FastTokenizer, object]:
    from transformers import AutoTokenizer

    path = default_embedding_model_path()
    return FastTokenizer(path), AutoTokenizer.from_pretrained(path, local_files_only=True)


TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=400
) | st.lists(
    st.sampled_from(["naïve", "ÉCOLE", "日本語", "😀👍🏽", "don't", "U.S.", "\t", "  "]),
    max_size=200,
).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=8), st.integers(min_value=3, max_value=300))
def test_fast_tokenizer_gives_the_transformers_ids_whole_and_cut(texts, max_length):
    fast, reference = tokenizers()
    assert fast(texts)["input_ids"] == reference(texts)["input_ids"]  # type: ignore[operator]
    cut = {"truncation": True, "max_length": max_length, "return_attention_mask": False}
    assert fast(texts, **cut)["input_ids"] == reference(texts, **cut)["input_ids"]  # type: ignore[operator]
    assert fast(texts[0], add_special_tokens=False) == {
        "input_ids": reference(texts[0], add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    }


def test_the_tokens_stage_writes_the_same_frame_with_either_tokenizer():
    from datetime import date

    import polars as pl

    fast, reference = tokenizers()
    assert (fast.sep_token_id, fast.pad_token_id) == (
        reference.sep_token_id,  # type: ignore[attr-defined]
        reference.pad_token_id,  # type: ignore[attr-defined]
    )
    cleaned = pl.DataFrame(
        {
            "doc_id": ["a", "b", "c"],
            "ingest_date": [date(2026, 12, 5)] * 3,
            "text": ["short one", "a much longer text " * 300, "Ünïcödé 😀"],
        }
    )
    assert tokenize_documents(cleaned, fast, 1006).equals(
        tokenize_documents(cleaned, reference, 1006)
    )
