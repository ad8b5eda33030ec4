"""A sentiment classifier fine-tuned end to end from the embedding model (MiniLM), and how well
it does per domain: training, held-out evaluation with confidence intervals, and the checkpoint.

The encoder and a new classification layer are trained together (a plain torch loop: AdamW,
linear warm-up and decay, domain-weighted cross-entropy, fixed seed) on the training rows of
the same stratified split the logistic head uses (`held_out_split`), so both models are judged
on the same held-out rows. The result is saved as a Hugging Face checkpoint (safetensors and
tokenizer files, no pickle) whose version is the hash of its files (`resources.checkpoints`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from nlp_assets.kernels.sentiment import domain_weights, held_out_split, wilson_interval
from nlp_assets.resources.checkpoints import publish, refuse_pickle, set_current, staging_dir


@dataclass(frozen=True)
class FinetuneSettings:
    """What a training run does; every field changes the checkpoint (and so its version)."""

    epochs: int = 2
    max_rows: int = 0  # training rows used (a stratified sample); 0 = all
    batch_size: int = 16
    learning_rate: float = 5e-5
    # The classifier starts untrained and the pooler was never trained for this model: at the
    # encoder's rate they barely move in a CPU budget of steps (measured: 1,000 rows, one epoch,
    # all at 5e-5 stays at chance, 0.55; these layers at 2e-3 reach 0.70 in the same steps).
    head_learning_rate: float = 2e-3
    max_length: int = 128  # tokens read in training and evaluation
    warmup_share: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "cpu"  # 'cpu', 'cuda' or 'auto' (CUDA when present)


@dataclass(frozen=True)
class FinetuneResult:
    version: str
    path: Path
    labels: tuple[str, ...]
    metrics: dict[str, float | int]
    per_domain: pl.DataFrame
    test_index: np.ndarray
    test_predicted: np.ndarray = field(repr=False)


class IncompatibleCheckpoint(ValueError):
    """A base checkpoint whose classification layer does not fit the labelled set."""


# -- evaluation -----------------------------------------------------------------------------------


def bootstrap_interval(
    truth: np.ndarray,
    predicted: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    *,
    rounds: int = 1_000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile bootstrap interval of `metric(truth, predicted)` over resampled rows."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    if n == 0:
        return (0.0, 1.0)
    values = [metric(truth[idx], predicted[idx]) for idx in rng.integers(0, n, size=(rounds, n))]
    low, high = np.percentile(values, [2.5, 97.5])
    return (float(low), float(high))


def macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import f1_score  # scikit-learn on use: 0.9 s of an import

    return float(f1_score(truth, predicted, average="macro", zero_division=0))


def domain_metrics(
    truth: Sequence[str], predicted: Sequence[str], domains: Sequence[str], *, seed: int = 0
) -> pl.DataFrame:
    """Per domain (and `all`): n, accuracy with its Wilson interval, macro-F1 with a bootstrap
    interval."""
    truth_a, predicted_a = np.asarray(truth), np.asarray(predicted)
    domains_a = np.asarray(domains)
    rows = []
    for domain in [*sorted(set(domains_a.tolist())), "all"]:
        mask = np.ones(len(truth_a), bool) if domain == "all" else domains_a == domain
        t, p = truth_a[mask], predicted_a[mask]
        correct = int((t == p).sum())
        acc_low, acc_high = wilson_interval(correct, len(t))
        f1_low, f1_high = bootstrap_interval(t, p, macro_f1, seed=seed)
        rows.append(
            {
                "domain": domain,
                "n_test": len(t),
                "accuracy": correct / len(t) if len(t) else 0.0,
                "accuracy_low": acc_low,
                "accuracy_high": acc_high,
                "macro_f1": macro_f1(t, p),
                "macro_f1_low": f1_low,
                "macro_f1_high": f1_high,
            }
        )
    return pl.DataFrame(rows)


def below_floors(per_domain: pl.DataFrame, floors: dict[str, dict[str, float]]) -> list[str]:
    """The figures under their floor (`{domain: {"accuracy": f, "macro_f1": f}}`), as text; a
    domain with a floor but no held-out rows fails too."""
    figures = {row["domain"]: row for row in per_domain.iter_rows(named=True)}
    failed = []
    for domain, metric_floors in sorted(floors.items()):
        for metric, floor in sorted(metric_floors.items()):
            value = figures.get(domain, {}).get(metric)
            if value is None or value < floor:
                failed.append(f"{domain} {metric} {value if value is None else round(value, 4)}")
                failed[-1] += f" < {floor}"
    return failed


# -- training -------------------------------------------------------------------------------------


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_base(base: Path, labels: Sequence[str], seed: int) -> tuple[Any, Any]:
    """Tokenizer and a sequence classifier over `base` with one output per label. A base that
    already is a classifier must have exactly these labels: anything else is refused."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.disable_progress_bar()
    config = AutoConfig.from_pretrained(base)
    architectures = config.architectures or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        have = [str(config.id2label[i]).lower() for i in range(len(config.id2label))]
        if have != list(labels):
            raise IncompatibleCheckpoint(
                f"base checkpoint {base} classifies {len(have)} labels {have}; the labelled set "
                f"has {len(labels)} labels {list(labels)}: start from an encoder or a "
                "classifier with the same labels"
            )
    torch.manual_seed(seed)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "newly initialised classifier": expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    return AutoTokenizer.from_pretrained(base), model


def cap_rows(
    rows: np.ndarray, labels: Sequence[str], domains: Sequence[str], max_rows: int, seed: int
) -> np.ndarray:
    """A stratified (domain x label) sample of `max_rows` of `rows` (all when 0 or enough)."""
    if max_rows <= 0 or max_rows >= len(rows):
        return rows
    from sklearn.model_selection import train_test_split

    strata = [f"{domains[i]}/{labels[i]}" for i in rows]
    kept, _ = train_test_split(rows, train_size=max_rows, random_state=seed, stratify=strata)
    return np.sort(kept)


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffled batches of similar length (less padding): shuffle, sort within windows of 50
    batches, cut, shuffle the batches."""
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _pad(ids: Sequence[Sequence[int]], pad_id: int, device: str) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in ids)
    batch = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, seq in enumerate(ids):
        batch[r, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[r, : len(seq)] = 1
    return batch.to(device), mask.to(device)


def train_classifier(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    targets: Sequence[int],
    weights: Sequence[float],
    settings: FinetuneSettings,
    log: Callable[[str], None] | None = None,
) -> dict[str, float | int]:
    """Fine-tune every weight of `model` in place; returns steps, seconds and the last loss."""
    import torch

    device = pick_device(settings.device)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    ids = tokenizer(
        list(texts), truncation=True, max_length=settings.max_length, return_token_type_ids=False
    )["input_ids"]
    y = torch.as_tensor(list(targets), dtype=torch.long)
    w = torch.as_tensor(list(weights), dtype=torch.float32)
    model.to(device).train()
    groups: dict[tuple[bool, bool], list[Any]] = {}
    for name, p in model.named_parameters():
        head = name.startswith("classifier") or ".pooler." in f".{name}"
        groups.setdefault((head, p.ndim > 1), []).append(p)
    optimizer = torch.optim.AdamW(
        [
            {
                "params": params,
                "lr": settings.head_learning_rate if head else settings.learning_rate,
                "weight_decay": settings.weight_decay if decay else 0.0,
            }
            for (head, decay), params in groups.items()
        ]
    )
    steps = settings.epochs * math.ceil(len(ids) / settings.batch_size)
    warmup = max(1, int(steps * settings.warmup_share))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))),
    )
    pad_id = tokenizer.pad_token_id or 0
    started, cpu_started = time.perf_counter(), time.process_time()
    step, loss_value = 0, float("nan")
    for epoch in range(settings.epochs):
        for rows in length_bucketed_batches([len(i) for i in ids], settings.batch_size, rng):
            batch, mask = _pad([ids[i] for i in rows], pad_id, device)
            logits = model(input_ids=batch, attention_mask=mask).logits
            losses = torch.nn.functional.cross_entropy(
                logits.float(), y[rows].to(device), reduction="none"
            )
            rw = w[rows].to(device)
            loss = (losses * rw).sum() / rw.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_value = float(loss.detach())
            if log is not None and (step % 50 == 0 or step == steps):
                log(
                    f"fine-tune epoch {epoch + 1}/{settings.epochs} step {step}/{steps} "
                    f"loss {loss_value:.4f} ({time.perf_counter() - started:.0f} s)"
                )
    model.eval()
    return {
        "steps": step,
        "train_seconds": round(time.perf_counter() - started, 1),
        # CPU time of this process: on a loaded machine, wall time / this shows the share got
        "train_cpu_seconds": round(time.process_time() - cpu_started, 1),
        "last_loss": loss_value,
    }


def predict_proba(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    device: str = "cpu",
    batch_size: int = 64,
) -> np.ndarray:
    """Class probabilities per text (float32 weights, length-sorted batches)."""
    import torch

    device = pick_device(device)
    ids = tokenizer(
        list(texts), truncation=True, max_length=max_length, return_token_type_ids=False
    )["input_ids"]
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float64)
    order = np.argsort([len(i) for i in ids], kind="stable")
    model.to(device).eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch, mask = _pad([ids[i] for i in rows], tokenizer.pad_token_id or 0, device)
            logits = model(input_ids=batch, attention_mask=mask).logits.float()
            out[rows] = torch.softmax(logits, dim=-1).cpu().numpy()
    return out


def save_checkpoint(model: Any, tokenizer: Any, root: Path, *, make_current: bool) -> str:
    """Save as a safetensors Hugging Face checkpoint under `<root>/<content hash>/`; point
    `<root>/CURRENT` at it when `make_current`. Returns the version (the content hash)."""
    root = Path(root)
    staging = staging_dir(root)
    model.to("cpu").save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    refuse_pickle(staging)
    version = publish(staging, root)
    if make_current:
        set_current(root, version)
    return version


def finetune_sentiment(
    texts: Sequence[str],
    labels: Sequence[str],
    domains: Sequence[str],
    *,
    base: Path,
    root: Path,
    settings: FinetuneSettings,
    test_size: float = 0.2,
    floors: dict[str, dict[str, float]] | None = None,
    log: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Train on the training rows of `held_out_split`, evaluate on its held-out rows, save the
    checkpoint, and make it the serving version only when no figure is under `floors`."""
    from sklearn.metrics import accuracy_score

    texts, labels, domains = list(texts), list(labels), list(domains)
    names = tuple(sorted(set(labels)))
    train, test = held_out_split(labels, domains, test_size=test_size, seed=settings.seed)
    train = cap_rows(train, labels, domains, settings.max_rows, settings.seed)
    tokenizer, model = load_base(base, names, settings.seed)
    index = {label: i for i, label in enumerate(names)}
    run = train_classifier(
        model,
        tokenizer,
        [texts[i] for i in train],
        [index[labels[i]] for i in train],
        domain_weights(np.asarray(domains)[train]).tolist(),
        settings,
        log,
    )
    proba = predict_proba(
        model,
        tokenizer,
        [texts[i] for i in test],
        max_length=settings.max_length,
        device=settings.device,
    )
    predicted = np.asarray(names)[proba.argmax(axis=1)]
    truth = np.asarray(labels)[test]
    per_domain = domain_metrics(truth, predicted, np.asarray(domains)[test], seed=settings.seed)
    failed = below_floors(per_domain, floors or {})
    version = save_checkpoint(model, tokenizer, root, make_current=not failed)
    metrics: dict[str, float | int] = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": macro_f1(truth, predicted),
        "n_train": len(train),
        "n_test": len(test),
        **run,
    }
    return FinetuneResult(
        version=version,
        path=Path(root) / version,
        labels=names,
        metrics=metrics,
        per_domain=per_domain,
        test_index=test,
        test_predicted=predicted,
    )
