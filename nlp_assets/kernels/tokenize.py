"""Stage 3, tokens: the embedding model's own (fast, Rust) tokenizer, one batch call per chunk."""

from __future__ import annotations

from typing import Any

import polars as pl

TOKENS_SCHEMA: dict[str, pl.DataType] = {
    "doc_id": pl.String(),
    "ingest_date": pl.Date(),
    "token_ids": pl.List(pl.UInt32()),
    "n_tokens": pl.Int64(),
    "truncated": pl.Boolean(),
}

#: Documents per tokenizer call: big enough for the Rust batch path, small enough for memory.
CHUNK = 4_096


def tokenize_documents(cleaned: pl.DataFrame, tokenizer: Any, max_length: int) -> pl.DataFrame:
    """Token ids (with the model's special tokens) cut to `max_length`: the most the embedder
    reads (`SentenceEmbedder.read_length`, its windows' span; a longer document is embedded in
    overlapping windows, docs/models.md "Long documents").

    `n_tokens` counts the whole document before the cut, so a reader can see how much a
    model reading `max_length` tokens did not read; `truncated` flags those documents.
    """
    texts = cleaned["text"].to_list()
    ids: list[list[int]] = []
    for start in range(0, len(texts), CHUNK):
        encoded = tokenizer(
            texts[start : start + CHUNK],
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        ids.extend(encoded["input_ids"])
    n_tokens = [len(row) for row in ids]
    sep = tokenizer.sep_token_id
    cut = [row if len(row) <= max_length else [*row[: max_length - 1], sep] for row in ids]
    return pl.DataFrame(
        {
            "doc_id": cleaned["doc_id"],
            "ingest_date": cleaned["ingest_date"],
            "token_ids": pl.Series(cut, dtype=pl.List(pl.UInt32)),
            "n_tokens": pl.Series(n_tokens, dtype=pl.Int64),
            "truncated": pl.Series([n > max_length for n in n_tokens], dtype=pl.Boolean),
        },
        schema=TOKENS_SCHEMA,
    )
