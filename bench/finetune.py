"""The fine-tuned MiniLM classifier against the logistic head, per domain, on the same rows.

In one process, on the labelled set (`data/labelled/sentiment.parquet`) and its held-out split
(`held_out_split`: stratified by domain x label, seed 0, 20%):

(h) the logistic head as `sentiment_model` trains it (MiniLM sentence embeddings, domain
    weights, C=4) on the training rows;
(f) MiniLM fine-tuned end to end (`nlp_assets.kernels.finetune`) on the training rows (or a
    stratified `--max-rows` sample of them), `--epochs` passes.

Prints, per domain and overall: n, accuracy with its 95% Wilson interval, macro-F1 with a 95%
bootstrap interval, for both models; the paired bootstrap 95% interval of the accuracy
difference (f - h) on the same rows, and whether (f) beats (h) (the interval is above 0); the
training wall and CPU seconds (on a loaded machine wall / CPU shows the share of the CPUs the
run got). Run: `python -m bench.finetune [--epochs 2 --max-rows 2000 --out figures.json]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from nlp_assets import settings
from nlp_assets.kernels.finetune import (
    FinetuneSettings,
    bootstrap_interval,
    domain_metrics,
    finetune_sentiment,
)
from nlp_assets.kernels.sentiment import held_out_split, train_sentiment_head
from nlp_assets.resources.models import ModelResource, default_embedding_model_path


def accuracy_gain_interval(
    truth: np.ndarray, a: np.ndarray, b: np.ndarray, *, seed: int = 0, rounds: int = 2_000
) -> tuple[float, float, float]:
    """Accuracy of a minus accuracy of b on the same rows, with a paired bootstrap 95% CI."""
    right_a, right_b = (a == truth).astype(float), (b == truth).astype(float)
    gain = float(right_a.mean() - right_b.mean())
    low, high = bootstrap_interval(
        right_a, right_b, lambda x, y: float(x.mean() - y.mean()), rounds=rounds, seed=seed
    )
    return gain, low, high


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labelled", default=settings.labelled_sentiment_path())
    parser.add_argument("--epochs", type=int, default=settings.finetune_epochs())
    parser.add_argument("--max-rows", type=int, default=settings.finetune_max_rows())
    parser.add_argument("--device", default=settings.finetune_device())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    frame = pl.read_parquet(args.labelled)
    texts, labels, domains = (frame[c].to_list() for c in ("text", "label", "domain"))
    _, test = held_out_split(labels, domains, seed=args.seed)
    truth, test_domains = np.asarray(labels)[test], np.asarray(domains)[test]

    started = time.perf_counter()
    embedder = ModelResource(device="cpu").embedder
    vectors = embedder.embed_texts(texts)
    head = train_sentiment_head(
        vectors,
        labels,
        domains,
        embedding_model=embedder.name,
        embedding_model_version=embedder.version,
        seed=args.seed,
    )
    head_seconds = time.perf_counter() - started
    head_predicted = np.asarray(head.head.labels)[
        head.head.predict_proba(vectors[test]).argmax(axis=1)
    ]

    with tempfile.TemporaryDirectory() as root:
        tuned = finetune_sentiment(
            texts,
            labels,
            domains,
            base=default_embedding_model_path(),
            root=Path(root),
            settings=FinetuneSettings(
                epochs=args.epochs, max_rows=args.max_rows, seed=args.seed, device=args.device
            ),
            log=lambda line: print(line, flush=True),
        )
    assert np.array_equal(tuned.test_index, test)  # the same held-out rows

    head_table = domain_metrics(truth, head_predicted, test_domains, seed=args.seed)
    tuned_table = domain_metrics(truth, tuned.test_predicted, test_domains, seed=args.seed)
    rows = []
    for h, f in zip(
        head_table.iter_rows(named=True), tuned_table.iter_rows(named=True), strict=True
    ):
        mask = np.ones(len(truth), bool) if h["domain"] == "all" else test_domains == h["domain"]
        gain, low, high = accuracy_gain_interval(
            truth[mask], tuned.test_predicted[mask], head_predicted[mask], seed=args.seed
        )
        rows.append(
            {
                "domain": h["domain"],
                "n": h["n_test"],
                "head_acc": f"{h['accuracy']:.3f} [{h['accuracy_low']:.3f}, "
                f"{h['accuracy_high']:.3f}]",
                "tuned_acc": f"{f['accuracy']:.3f} [{f['accuracy_low']:.3f}, "
                f"{f['accuracy_high']:.3f}]",
                "head_f1": f"{h['macro_f1']:.3f} [{h['macro_f1_low']:.3f}, "
                f"{h['macro_f1_high']:.3f}]",
                "tuned_f1": f"{f['macro_f1']:.3f} [{f['macro_f1_low']:.3f}, "
                f"{f['macro_f1_high']:.3f}]",
                "acc_gain": f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]",
                "beats_head": low > 0,
            }
        )
    with pl.Config(tbl_rows=20, tbl_cols=20, fmt_str_lengths=40, tbl_width_chars=200):
        print(pl.DataFrame(rows))
    print(
        f"fine-tune: epochs {args.epochs}, rows {tuned.metrics['n_train']}, steps "
        f"{tuned.metrics['steps']}, {tuned.metrics['train_seconds']} s wall, "
        f"{tuned.metrics['train_cpu_seconds']} s CPU; head (embed + fit): {head_seconds:.0f} s; "
        f"version {tuned.version}"
    )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "settings": vars(args) | {"out": str(args.out), "labelled": args.labelled},
                    "head": head_table.to_dicts(),
                    "finetuned": tuned_table.to_dicts(),
                    "comparison": rows,
                    "finetune_metrics": tuned.metrics,
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
