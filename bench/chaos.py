"""Chaos benchmark: the chaos test's scenario at scale, with figures.

The same harness as `nlp_assets_tests/test_chaos_streaming.py` (nlp_assets_tests/chaos.py): a
private Tansu broker and redis-server, a real `dagster-daemon` (queued run coordinator, run
retries, run monitoring from the repo's dagster.yaml) running the topic's Kafka sensor and its
micro-batch runs; N messages with `--hostile-share` hostile ones of every kind (2 MB messages,
deep nesting, huge integers, overflowing timestamps, invalid JSON and UTF-8, non-objects,
missing id or text, blank text) and valid ones with NUL and zero-width characters inside;
while they arrive one run is SIGKILLed in a model step, the broker is paused (SIGSTOP) for
`--pause-seconds` and Redis stopped for `--redis-down-seconds` (`--no-faults` leaves them out).

Printed: the accounting table (valid sent / in predictions / hostile sent / in the DLQ / in the
quarantine / runs succeeded, failed, retried), messages/s and p50/p95 latency.

What the latency measures: from the broker's acknowledgement of a message (the producer's
delivery report) to the ASSET_MATERIALIZATION event of `predictions` in the successful run
whose offset range holds it, i.e. until its prediction row is in the lake. messages/s: valid
messages in predictions over the time from the first acknowledgement to the last such event.

    python -m bench.chaos --messages 200000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.streaming import train_sentiment_head
from nlp_assets import settings
from nlp_assets_tests.chaos import FAULTS, chaos_stack, make_traffic, percentile, run_chaos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=1_000.0, help="messages produced per second")
    parser.add_argument(
        "--max-messages-per-run", type=int, default=0, help="default: a tenth of --messages"
    )
    parser.add_argument("--hostile-share", type=float, default=0.03)
    parser.add_argument("--pause-seconds", type=float, default=20.0)
    parser.add_argument("--redis-down-seconds", type=float, default=20.0)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--settle-timeout", type=float, default=3_600.0)
    parser.add_argument("--workdir", type=Path, help="keep the lake, logs and instance here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        root = args.workdir or Path(tmp)
        trained = Path(settings.lake_dir()) / "sentiment_model"
        if not (trained / "_delta_log").exists():
            trained = train_sentiment_head(root / "trained")
        per_run = args.max_messages_per_run or max(1, args.messages // 10)
        started = time.perf_counter()
        with chaos_stack(root / "chaos", trained, max_messages_per_run=per_run) as stack:
            messages = make_traffic(stack.topic, args.messages, hostile_share=args.hostile_share)
            outcome = run_chaos(
                stack,
                messages,
                produce_seconds=args.messages / args.rate,
                faults=frozenset() if args.no_faults else FAULTS,
                pause_s=args.pause_seconds,
                redis_down_s=args.redis_down_seconds,
                settle_timeout=args.settle_timeout,
            )
            print(outcome.report(stack, log_lines=10))
        wall = time.perf_counter() - started

    accounting = outcome.accounting
    values = accounting.latencies_s
    print(
        f"\n{args.messages} messages ({accounting.hostile_sent} hostile) at {args.rate:g}/s, "
        f"<= {per_run} a run, faults {'off' if args.no_faults else 'on'}; wall {wall:.0f} s"
    )
    print(f"{'msg/s':>8} {'p50 s':>8} {'p95 s':>8} {'runs':>5} {'settled':>8}")
    print(
        f"{accounting.messages_per_s or 0:>8.1f} {percentile(values, 0.5):>8.1f} "
        f"{percentile(values, 0.95):>8.1f} {accounting.runs['total']:>5} "
        f"{outcome.settled.settled!s:>8}"
    )
    ok = (
        outcome.settled.settled
        and not accounting.valid_missing
        and not accounting.duplicated_doc_ids
        and not accounting.hostile_unaccounted
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
