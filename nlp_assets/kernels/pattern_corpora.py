"""The review polarity sets of Debian's python3-pattern, as `make data` leaves them: file
names, reading, and the fixed sample of foreign reviews that the sample corpus lands.

`make data` (`python -m dev.sample_corpus`) extracts the package's test corpora into
`<NLP_DATA_DIR>/cache/pattern-corpora/`; the pipeline only reads them (`require` names the
command when they are missing): nothing is downloaded or installed at run time.
"""

from __future__ import annotations

import csv
import hashlib
import html
from pathlib import Path
from typing import Any

#: The folder, under a cache folder, that `make data` extracts the corpora into.
PATTERN_CACHE_NAME = "pattern-corpora"
PANG_LEE_SENTENCES = "polarity-en-pang&lee2.csv"  # 4,000 sentences (the README swaps the two)
PANG_LEE_REVIEWS = "polarity-en-pang&lee1.csv"  # 1,500 full reviews
FOREIGN_REVIEWS: dict[str, str] = {
    "fr": "polarity-fr-amazon.csv",  # columns text,label (the others are label,text)
    "de": "polarity-de-amazon.csv",
    "nl": "polarity-nl-bol.com.csv",
}
PATTERN_FILES = (PANG_LEE_SENTENCES, PANG_LEE_REVIEWS, *FOREIGN_REVIEWS.values())
FOREIGN_SAMPLE_PER_LANG = 100  # 300 over all days, about 60 a day

POLARITY = {"1": "positive", "-1": "negative"}


class CorporaMissing(FileNotFoundError):
    """The pattern corpora are not where `make data` puts them."""


def require(corpora_dir: Path, files: tuple[str, ...] = PATTERN_FILES) -> Path:
    """`corpora_dir` if it holds `files`, else `CorporaMissing` naming what is missing and the
    command that prepares it."""
    missing = [name for name in files if not (corpora_dir / name).is_file()]
    if missing:
        raise CorporaMissing(
            f"the pattern review corpora are missing from {corpora_dir} ({', '.join(missing)}): "
            "run `make data` (it extracts Debian's python3-pattern corpora there), or point the "
            "run config at a folder that holds them"
        )
    return corpora_dir


def stable_int(*parts: str) -> int:
    """A 64-bit integer from the sha256 of the parts (stable across runs and machines)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def text_key(text: str) -> str:
    """Normalised text for overlap checks: HTML unescaped, lower case, whitespace collapsed."""
    return " ".join(html.unescape(text).lower().split())


def read_polarity_csv(path: Path) -> list[tuple[str, str]]:
    """(label, text) rows of a pattern polarity CSV; the label column may come first or last."""
    rows: list[tuple[str, str]] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for first, second in csv.reader(handle):
            label, text = (first, second) if first in POLARITY else (second, first)
            rows.append((POLARITY[label], text.strip()))
    return rows


def foreign_sample(corpora_dir: Path) -> list[dict[str, Any]]:
    """The foreign reviews the sample corpus lands, as landing records: a fixed, hash-ordered
    sample of distinct texts from each foreign review file (`FOREIGN_SAMPLE_PER_LANG` each)."""
    sample: list[dict[str, Any]] = []
    for lang, file_name in FOREIGN_REVIEWS.items():
        source = f"reviews_{lang}"
        candidates: dict[str, dict[str, Any]] = {}
        for number, (_, text) in enumerate(read_polarity_csv(corpora_dir / file_name), start=1):
            if text_key(text) not in candidates:  # the files repeat some reviews
                candidates[text_key(text)] = {
                    "id": f"{lang}-{number:04d}",
                    "text": text,
                    "source": source,
                    "timestamp": None,
                    "metadata": {"lang_hint": lang},
                }
        ranked = sorted(candidates.values(), key=lambda r: stable_int("sample", source, r["id"]))
        sample.extend(ranked[:FOREIGN_SAMPLE_PER_LANG])
    return sample
