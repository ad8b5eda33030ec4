from datetime import date

import polars as pl

from nlp_assets.kernels.tokenize import TOKENS_SCHEMA, tokenize_documents

DAY = date(2026, 11, 16)


def _cleaned(texts: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": [f"{i:016x}" for i in range(len(texts))],
            "ingest_date": [DAY] * len(texts),
            "text": texts,
        },
        schema={"doc_id": pl.String, "ingest_date": pl.Date, "text": pl.String},
    )


def test_token_ids_match_the_models_tokenizer_with_special_tokens(embedder):
    frame = tokenize_documents(
        _cleaned(["Hello world", "Dagster runs NLP 🚀"]), embedder.tokenizer, 16
    )
    tok = embedder.tokenizer
    assert frame.schema == pl.Schema(TOKENS_SCHEMA)
    first = frame["token_ids"][0].to_list()
    assert first == [
        tok.cls_token_id,
        *tok.convert_tokens_to_ids(["hello", "world"]),
        tok.sep_token_id,
    ]
    assert frame["n_tokens"].to_list() == [len(first), len(frame["token_ids"][1])]
    assert frame["truncated"].to_list() == [False, False]


def test_long_text_is_cut_to_max_length_ending_with_sep_and_flagged(embedder):
    long = " ".join(["pipeline"] * 500)
    frame = tokenize_documents(_cleaned([long, "short"]), embedder.tokenizer, max_length=32)
    ids = frame["token_ids"][0].to_list()
    assert len(ids) == 32
    assert ids[0] == embedder.tokenizer.cls_token_id and ids[-1] == embedder.tokenizer.sep_token_id
    assert frame["n_tokens"][0] == 502  # 500 words + [CLS] + [SEP], counted before the cut
    assert frame["truncated"].to_list() == [True, False]


def test_empty_input_keeps_the_schema(embedder):
    frame = tokenize_documents(_cleaned([]), embedder.tokenizer, 16)
    assert frame.height == 0
    assert frame.schema == pl.Schema(TOKENS_SCHEMA)
