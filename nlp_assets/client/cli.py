"""`nlp`: the command line of the API (on the SDK), plus API key administration.

Exit codes a script can use: 0 done; 1 error; 2 usage; 3 credential refused (401/403);
4 not found; 5 some records rejected; 6 service unavailable or rate limited after retries;
7 the backfill or run failed; 8 timed out waiting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from nlp_assets.client import sdk

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
EXIT_REJECTED, EXIT_UNAVAILABLE, EXIT_FAILED, EXIT_TIMEOUT = 5, 6, 7, 8


def _client(args: argparse.Namespace) -> sdk.Client:
    return sdk.Client(args.url, args.key, retries=args.retries)


def _progress(total: int | None, unit: str, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit=unit,
        unit_scale=True,
        desc=desc,
        disable=not enabled,
        file=sys.stderr,
        leave=False,
    )


def _lines(handle: IO[bytes]) -> Iterator[bytes]:
    yield from handle


# commands --------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    show = sys.stderr.isatty() and not args.quiet
    if args.file == "-":
        handle: IO[bytes] = sys.stdin.buffer
        total = None
    else:
        path = Path(args.file)
        if not path.is_file():
            print(f"nlp submit: no such file: {path}", file=sys.stderr)
            return EXIT_USAGE
        handle = path.open("rb")
        total = None
    with _client(args) as client, _progress(total, "doc", show, "submit") as bar:
        try:
            result = client.submit_lines(
                _lines(handle), batch_size=args.batch_size, progress=bar.update
            )
        finally:
            if handle is not sys.stdin.buffer:
                handle.close()
    for receipt in result.accepted + result.duplicates:
        print(
            json.dumps(
                {
                    "line": receipt.index + 1,
                    "doc_id": receipt.doc_id,
                    "status": receipt.status,
                    "destination": receipt.destination,
                }
            )
        )
    for receipt in result.rejected:
        print(f"line {receipt.index + 1}: rejected: {receipt.reason}", file=sys.stderr)
    print(
        f"{len(result.accepted)} accepted, {len(result.duplicates)} duplicates, "
        f"{len(result.rejected)} rejected",
        file=sys.stderr,
    )
    return EXIT_REJECTED if result.rejected else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.status(args.doc_id)
    if args.json:
        out: dict[str, Any] = {"doc_id": status.doc_id, "status": status.status, "day": status.day}
        if status.prediction:
            out["prediction"] = dict(status.prediction.raw)
        if status.reason:
            out |= {"reason": status.reason, "stage": status.stage}
        if status.destination:
            out |= {"destination": status.destination, "accepted_at": status.accepted_at}
        if status.status == "processed":
            out |= {"trace_id": status.trace_id, "runs": list(status.runs)}
        print(json.dumps(out, default=str))
        return EXIT_OK
    print(f"{status.doc_id}: {status.status} (day {status.day})")
    if status.prediction:
        p = status.prediction
        score = "-" if p.sentiment_score is None else f"{p.sentiment_score:.3f}"
        print(f"  sentiment: {p.sentiment_label} (P(positive) {score}, {p.sentiment_model})")
        entities = ", ".join(f"{e.text} [{e.label}]" for e in p.entities) or "none"
        print(f"  entities:  {entities} ({p.ner_model})")
        print(f"  language:  {p.language}; source: {p.source}")
        if p.skipped_reason:
            print(f"  skipped:   {p.skipped_reason}")
        print(f"  trace:     {status.trace_id or '-'}; runs: {', '.join(status.runs) or '-'}")
    if status.reason:
        print(f"  quarantined at {status.stage}: {status.reason}")
    if status.destination:
        print(f"  accepted {status.accepted_at}, sent to {status.destination}; not yet processed")
    return EXIT_OK


def cmd_read(args: argparse.Namespace) -> int:
    show = sys.stderr.isatty() and not args.quiet
    target = sys.stdout.buffer if args.output == "-" else None
    path = Path(args.output) if target is None else None
    tmp = path.with_name(f".{path.name}.part") if path else None
    handle = target or tmp.open("wb")  # type: ignore[union-attr]
    filters = {"source": args.source, "language": args.language, "label": args.label}
    if args.what != "predictions":
        filters = {}
    try:
        with _client(args) as client, _progress(None, "B", show, f"read {args.day}") as bar:
            last = 0

            def progress(done: int, total: int | None) -> None:
                nonlocal last
                if total and bar.total != total:
                    bar.total = total
                bar.update(done - last)
                last = done

            written = client.download(
                args.what, args.day, args.format, handle.write, progress=progress, **filters
            )
    except BaseException:
        if tmp:
            handle.close()
            tmp.unlink(missing_ok=True)
        raise
    if tmp and path:
        handle.close()
        tmp.replace(path)  # a reader never sees half a file
        print(f"wrote {written} bytes to {path}", file=sys.stderr)
    return EXIT_OK


def cmd_backfill(args: argparse.Namespace) -> int:
    with _client(args) as client:
        launched = client.backfill(args.start, args.end)
        print(json.dumps({"backfill_id": launched.backfill_id, "partitions": launched.partitions}))
        if not args.wait:
            return EXIT_OK
        try:
            state = client.wait_for_run(
                launched.backfill_id,
                timeout_s=args.timeout,
                poll_s=args.poll,
                on_poll=lambda s: print(f"{s.kind} {s.id}: {s.status}", file=sys.stderr),
            )
        except TimeoutError as error:
            print(f"nlp backfill: {error}", file=sys.stderr)
            return EXIT_TIMEOUT
    print(json.dumps({"backfill_id": state.id, "status": state.status}))
    return EXIT_OK if state.succeeded else EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    with _client(args) as client:
        state = client.run(args.run_id)
    print(json.dumps(dict(state.raw)))
    return EXIT_OK


def _store():
    from nlp_assets.api.config import ApiSettings
    from nlp_assets.api.keys import key_store

    return key_store(ApiSettings.from_env())


def cmd_keys_create(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    expires = (
        datetime.now(UTC) + timedelta(days=args.expires_in_days) if args.expires_in_days else None
    )
    try:
        key, token = _store().create(
            args.name, args.role, channels=args.channel, expires_at=expires
        )
    except ValueError as error:
        print(f"nlp keys create: {error}", file=sys.stderr)
        return EXIT_USAGE
    channels = ", ".join(key.channels) or "the server's default"
    print(
        f"created key {key.key_id} ({key.name}, role {key.role}, channels: {channels}); "
        "the token is shown once:",
        file=sys.stderr,
    )
    print(token)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _store().list()
    if args.json:
        print(json.dumps([k.__dict__ for k in keys]))
        return EXIT_OK
    print(
        f"{'KEY ID':<14}{'ROLE':<11}{'CREATED':<27}{'EXPIRES':<27}{'REVOKED':<27}"
        f"{'CHANNELS':<20}NAME"
    )
    for k in keys:
        print(
            f"{k.key_id:<14}{k.role:<11}{k.created_at:<27}{k.expires_at or '-':<27}"
            f"{k.revoked_at or '-':<27}{','.join(k.channels) or '(default)':<20}{k.name}"
        )
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from datetime import timedelta

    try:
        old, successor, token = _store().rotate(args.key_id, timedelta(hours=args.overlap_hours))
    except KeyError as error:
        print(f"nlp keys rotate: {error.args[0]}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except ValueError as error:
        print(f"nlp keys rotate: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"created key {successor.key_id} to replace {old.key_id} ({old.name}, role {old.role}); "
        f"{old.key_id} keeps working until {old.expires_at}; the new token is shown once:",
        file=sys.stderr,
    )
    print(token)
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    try:
        key = _store().revoke(args.key_id)
    except KeyError as error:
        print(f"nlp keys revoke: {error.args[0]}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"revoked {key.key_id} ({key.name}) at {key.revoked_at}", file=sys.stderr)
    return EXIT_OK


def cmd_trace(args: argparse.Namespace) -> int:
    """A document's path from the lake and the Dagster instance: no API, no trace backend."""
    from nlp_assets.trace_path import document_path, render

    path = document_path(args.doc_id, days=args.day)
    if path is None:
        print(f"{args.doc_id}: not in the lake's raw_text in the days looked at", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(json.dumps(path, default=str) if args.json else render(path))
    return EXIT_OK


def cmd_lake_migrate(args: argparse.Namespace) -> int:
    from nlp_assets import settings
    from nlp_assets.lake.migrate import main as migrate

    return migrate(
        args.lake or settings.lake_dir(), remove_old=args.remove_old, dry_run=args.dry_run
    )


def cmd_serve_models(args: argparse.Namespace) -> int:
    from nlp_assets.resources.models.server import serve

    return serve(args.host, args.port)


def cmd_models_calibrate(args: argparse.Namespace) -> int:
    from nlp_assets.resources.models.calibrate import run

    return run(args)


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """`nlp models calibrate`'s options (also `python -m nlp_assets.resources.models.calibrate`)."""
    parser.add_argument("--short", type=int, default=300, help="review sentences (gate, timing)")
    parser.add_argument("--long", type=int, default=300, help="news articles (gate, timing)")
    parser.add_argument(
        "--backends", default="", help="comma list (default: every installed backend)"
    )
    parser.add_argument("--artifacts", default="", help="default: NLP_MODEL_ARTIFACTS_DIR")


# parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlp",
        description="Submit text to the NLP pipeline, read its results, launch backfills "
        "(through the API), and manage API keys (directly in the key store).",
        epilog="Environment: NLP_API_URL, NLP_API_KEY (an API key or a JWT). Key commands "
        "use DATABASE_URL (Postgres) or NLP_DATA_DIR (a local file), like the server. "
        "Exit codes: 0 ok, 1 error, 2 usage, 3 credential refused, 4 not found, "
        "5 records rejected, 6 unavailable, 7 run failed, 8 timed out.",
    )
    parser.add_argument(
        "--url", help="API base URL (default: $NLP_API_URL or %(default)s)", default=None
    )
    parser.add_argument("--key", help="API key or JWT (default: $NLP_API_KEY)", default=None)
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        help="retries on 429/503 and connection errors (default %(default)s)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "submit",
        help="submit NDJSON documents from FILE or - (stdin)",
        description="Each line a JSON object with id and text (optional "
        "source, timestamp, priority, metadata). Prints one JSON receipt "
        "per accepted line; rejected lines and their reasons go to stderr.",
    )
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("--batch-size", type=int, default=500, help="lines per request")
    p.set_defaults(func=cmd_submit)

    p = commands.add_parser(
        "status",
        help="a document's status and prediction",
        description="processed (sentiment, entities, models), quarantined "
        "(stage and reason); exit 4 while it is not processed yet.",
    )
    p.add_argument("doc_id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = commands.add_parser(
        "trace",
        help="a document's path: source, trace, runs and steps with durations",
        description="Reads the lake (NLP_DATA_DIR / NLP_LAKE_DIR) and the Dagster instance "
        "(DAGSTER_HOME) directly, not the API; works with no trace backend running. Exit 4 "
        "when the lake's raw_text does not hold the document in the days looked at.",
    )
    p.add_argument("doc_id")
    p.add_argument(
        "--day", action="append", help="YYYY-MM-DD to look in (repeatable; default: last 30)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_trace)

    p = commands.add_parser(
        "read",
        help="download a day's predictions or aggregates",
        description="Write a day's results to -o PATH (- for stdout).",
    )
    p.add_argument("day", metavar="DAY", help="YYYY-MM-DD")
    p.add_argument("--what", choices=["predictions", "aggregates"], default="predictions")
    p.add_argument("--format", choices=sorted(sdk.FORMATS), default="parquet")
    p.add_argument("-o", "--output", required=True, help="file to write, or - for stdout")
    p.add_argument("--source")
    p.add_argument("--language")
    p.add_argument("--label", choices=["positive", "negative"])
    p.set_defaults(func=cmd_read)

    p = commands.add_parser(
        "backfill",
        help="backfill the daily pipeline for FROM..TO",
        description="Launch a backfill of the days FROM to TO (inclusive) "
        "through the Dagster webserver; --wait follows it to the end "
        "(exit 7 if it failed, 8 on timeout).",
    )
    p.add_argument("start", metavar="FROM")
    p.add_argument("end", metavar="TO")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait at most")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between polls")
    p.set_defaults(func=cmd_backfill)

    p = commands.add_parser(
        "run",
        help="a run's or backfill's status",
        description="The status of a Dagster run or backfill id.",
    )
    p.add_argument("run_id")
    p.set_defaults(func=cmd_run)

    keys = commands.add_parser(
        "keys",
        help="create, list, rotate and revoke API keys",
        description="Administer API keys in the server's key store "
        "(needs the store's credentials, not an API key).",
    )
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = key_commands.add_parser(
        "create",
        help="create a key; the token is printed once",
        description="Prints the token on stdout (only time it exists "
        "in clear); the store keeps its sha256.",
    )
    p.add_argument("--name", required=True, help="who or what uses it")
    p.add_argument("--role", required=True, choices=["reader", "submitter", "operator"])
    p.add_argument(
        "--channel",
        action="append",
        metavar="NAME",
        help="a channel (document source) the key may submit to; repeat for several "
        "(default: the server's default channel, NLP_API_DEFAULT_SOURCE)",
    )
    p.add_argument(
        "--expires-in-days",
        type=float,
        metavar="DAYS",
        help="the key stops working after this (default: never, until revoked)",
    )
    p.set_defaults(func=cmd_keys_create)
    p = key_commands.add_parser(
        "rotate",
        help="issue a successor of a key; the old one works for an overlap, then is refused",
        description="Prints the successor's token on stdout (same name, role, channels and "
        "lifetime). The old key keeps working for --overlap-hours (never longer than it "
        "would have), so clients can switch without a gap; then it is refused (401).",
    )
    p.add_argument("key_id")
    p.add_argument(
        "--overlap-hours",
        type=float,
        default=24.0,
        metavar="HOURS",
        help="how long the old key keeps working (default: 24; 0: refused at once)",
    )
    p.set_defaults(func=cmd_keys_rotate)
    p = key_commands.add_parser(
        "list",
        help="list keys (never their tokens)",
        description="Key id, role, created, expires, revoked, channels, name.",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_list)
    p = key_commands.add_parser(
        "revoke",
        help="revoke a key by its id",
        description="The key is refused from then on (within the "
        "server's NLP_API_KEY_CACHE_SECONDS).",
    )
    p.add_argument("key_id")
    p.set_defaults(func=cmd_keys_revoke)

    lake = commands.add_parser(
        "lake",
        help="administer the lake (directly, not through the API)",
        description="Commands on the lake's files (needs access to its root).",
    )
    lake_commands = lake.add_subparsers(dest="lake_command", required=True, metavar="ACTION")
    p = lake_commands.add_parser(
        "migrate",
        help="convert a lake of the manifest layout into Delta tables, in place",
        description="Copies every table's every day and part of the old layout "
        "(<asset>/<YYYY-MM-DD>/_manifest, pre-manifest <part>.parquet, <asset>/data.parquet) "
        "into the asset's Delta table beside it, one commit per part, then verifies rows and "
        "doc ids per table, day and part, and prints a summary. Idempotent: a rerun (or a run "
        "after a killed one) copies only what is missing; a lake without old-layout files is "
        "not touched. Run it with the pipeline stopped. Exit 1 if any day did not verify.",
    )
    p.add_argument(
        "--lake",
        metavar="PATH",
        help="the lake's root (default: NLP_LAKE_DIR, else the environment's lake)",
    )
    p.add_argument(
        "--remove-old",
        action="store_true",
        help="delete the old-layout files of the tables whose days all verified "
        "(default: keep them and print what this would delete)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be copied; write nothing"
    )
    p.set_defaults(func=cmd_lake_migrate)

    p = commands.add_parser(
        "serve-models",
        help="run the model server: the registry's models held once for runs, the API and "
        "Spark (docs/models.md 'Model server')",
    )
    p.add_argument("--host", default=os.environ.get("NLP_MODEL_SERVER_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("NLP_MODEL_SERVER_PORT", "8600")))
    p.set_defaults(func=cmd_serve_models)

    models = commands.add_parser(
        "models",
        help="administer the models on this machine (directly, not through the API)",
        description="Commands on this machine's model artefacts (docs/models.md 'Backends').",
    )
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    p = model_commands.add_parser(
        "calibrate",
        help="export the embedding model for every installed backend, gate and time them",
        description="Exports MiniLM for each installed backend (AOTInductor, OpenVINO, ONNX "
        "Runtime), checks each against float32 torch (min cosine >= 0.999, sentiment labels "
        "agreeing on >= 99.5%), times each on short and long texts and writes the calibration "
        "record that backend 'auto' reads, under NLP_MODEL_ARTIFACTS_DIR by model version and "
        "device signature. Once per machine kind and model version; needs `make data`.",
    )
    add_calibrate_arguments(p)
    p.set_defaults(func=cmd_models_calibrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (sdk.AuthenticationError, sdk.PermissionDenied) as error:
        print(f"nlp {args.command}: {error}", file=sys.stderr)
        return EXIT_AUTH
    except sdk.NotFound as error:
        print(f"nlp {args.command}: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (sdk.Unavailable, sdk.RateLimited) as error:
        print(f"nlp {args.command}: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (sdk.ApiError, ValueError, ConnectionError) as error:
        print(f"nlp {args.command}: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
