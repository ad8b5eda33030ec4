"""The model server against LitServe serving the same model, and against the in-process path.

In one run, on the same real short texts (review sentences) and the same MiniLM entry of the
pipeline's registry, each server in its own process on this machine:

- ours: `nlp serve-models` (resources/models/server.py: FastAPI, one batching thread per model);
- LitServe (`litserve`, the strongest packaged alternative that installs beside our stack):
  the same `SentenceEmbedder`, its own dynamic batching (`max_batch_size`, `batch_timeout`);
- in-process: the registry's model called directly with whole batches (the batch path's model
  rate, what a run without a server does).

Two loads per server: 50 concurrent clients each sending one text at a time (p50/p99 latency,
requests/s; Little's law bounds p50 at about clients / throughput), and one client sending
1,024 documents a request (documents/s, as a run's features step does). Also: the server's
resident memory and time to ready. Run: `python -m bench.model_server [--requests 2000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

from bench.pipeline import documents
from nlp_assets.resources.models import ModelResource

LITSERVE_APP = textwrap.dedent(
    """
    import sys
    import litserve as ls
    import numpy as np
    from nlp_assets.resources.models import ModelResource

    class Embed(ls.LitAPI):
        def setup(self, device):
            models = ModelResource()
            self.model = models.local_registry().get(models.serve_name("embedding")).model

        def decode_request(self, request):
            return request["token_ids"]

        def predict(self, batch):
            return list(self.model.embed_token_ids(batch))

        def encode_response(self, output):
            return {"vector": np.asarray(output, dtype=np.float32).tolist()}

    if __name__ == "__main__":
        api = Embed(max_batch_size=64, batch_timeout=0.002)
        ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120).run(
            port=int(sys.argv[1]), generate_client_file=False
        )
    """
)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 180) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready in {timeout} s")


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (LitServe runs its model in a worker)."""
    out = subprocess.run(
        ["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)], capture_output=True, text=True
    ).stdout
    return sum(int(x) for x in out.split()) / 1024


async def concurrent_load(
    url: str, bodies: list[dict], clients: int, requests: int
) -> tuple[list[float], float]:
    """`clients` tasks each posting one body at a time until `requests` are done."""
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:

        async def client() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                response = await http.post(url, json=bodies[i % len(bodies)])
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return latencies, time.perf_counter() - started


def wrk_load(
    url: str,
    body: dict,
    clients: int,
    seconds: int,
    tmp: Path,
    headers: dict[str, str] | None = None,
    distinct_texts: list[str] | None = None,
) -> tuple[float, float, float]:
    """p50 ms, p99 ms and requests/s from `wrk` (Debian's; a C load generator, so the client
    takes little of the CPU the server needs), one body posted by `clients` connections.

    With `distinct_texts`, the n-th request's body is `{"texts": [text + " (n)"]}`, the texts
    taken in turn: no two requests send the same text, so no result cache answers them."""
    (tmp / "body.json").write_text(json.dumps(body))
    script = tmp / "post.lua"
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    lua = (
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        + extra
        + f'local f = io.open("{tmp / "body.json"}", "r"); wrk.body = f:read("*a"); f:close()\n'
    )
    if distinct_texts:
        # each line: the JSON string of a text without its closing quote
        (tmp / "texts.txt").write_text("\n".join(json.dumps(t)[:-1] for t in distinct_texts) + "\n")
        lua += (
            f'local texts = {{}}\nfor line in io.lines("{tmp / "texts.txt"}") do '
            "texts[#texts + 1] = line end\n"
            "local n = 0\n"
            "request = function()\n"
            "  n = n + 1\n"
            "  local text = texts[(n - 1) % #texts + 1]\n"
            '  return wrk.format(nil, nil, nil, \'{"texts": [\' .. text .. " (" .. n .. \')"]}\')\n'
            "end\n"
        )
    script.write_text(lua)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        value = next(line.split()[1] for line in out.splitlines() if line.strip().startswith(label))
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
        unit = next(u for u in ("us", "ms", "s") if value.endswith(u))
        return float(value[: -len(unit)]) * scale[unit]

    rps = float(next(line.split()[1] for line in out.splitlines() if "Requests/sec" in line))
    return ms("50%"), ms("99%"), rps


def bulk(url: str, token_ids: list[list[int]], key: str, chunk: int = 1_024) -> float:
    """Documents/s of one client sending `chunk` documents a request (ours) or, for a server
    that takes one document a request (LitServe), 64 concurrent single-document requests."""
    started = time.perf_counter()
    if key == "ours":
        with httpx.Client(timeout=300) as http:
            for start in range(0, len(token_ids), chunk):
                http.post(url, json={"token_ids": token_ids[start : start + chunk]})
    else:
        bodies = [{"token_ids": ids} for ids in token_ids]
        asyncio.run(concurrent_load(url, bodies, 64, len(bodies)))
    return len(token_ids) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2_000, help="without wrk")
    parser.add_argument("--seconds", type=int, default=20, help="wrk's duration")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--bulk-docs", type=int, default=3_000)
    args = parser.parse_args(argv)

    os.environ.pop("NLP_MODEL_SERVER_URL", None)
    models = ModelResource()
    embedder = models.local_registry().get(models.serve_name("embedding")).model
    texts = documents("short", max(args.bulk_docs, 1_000))
    ids = embedder.tokenize(texts)
    one = [{"token_ids": [row]} for row in ids[:1_000]]  # ours: a list of documents
    name = embedder.name

    # in-process: the batch path's model rate on the same documents
    embedder.embed_token_ids(ids[:256])
    started = time.perf_counter()
    embedder.embed_token_ids(ids[: args.bulk_docs])
    in_process = args.bulk_docs / (time.perf_counter() - started)
    print(f"in-process model rate: {in_process:.1f} docs/s ({args.bulk_docs} short texts)")

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "litserve_app.py"
        app.write_text(LITSERVE_APP)
        for key in ("ours", "litserve"):
            port = free_port()
            if key == "ours":
                command = [sys.executable, "-m", "nlp_assets.client.cli", "serve-models"]
                command += ["--port", str(port)]
                ready, embed = "/readyz", f"/v1/models/{name}/embed"
                bodies = one
            else:
                command = [sys.executable, str(app), str(port)]
                ready, embed = "/health", "/predict"
                bodies = [{"token_ids": row} for row in ids[:1_000]]
            log = (Path(tmp) / f"{key}.log").open("wb")
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                base = f"http://127.0.0.1:{port}"
                ready_s = wait_ready(base + ready, process)
                asyncio.run(concurrent_load(base + embed, bodies, args.clients, 200))  # warm
                if shutil.which("wrk"):
                    p50, p99, rps = wrk_load(
                        base + embed, bodies[0], args.clients, args.seconds, Path(tmp)
                    )
                else:  # the Python client: it takes CPU from the server on a small machine
                    latencies, seconds = asyncio.run(
                        concurrent_load(base + embed, bodies, args.clients, args.requests)
                    )
                    q = statistics.quantiles(latencies, n=100)
                    p50, p99, rps = q[49] * 1000, q[98] * 1000, args.requests / seconds
                docs_s = bulk(base + embed, ids[: args.bulk_docs], key)
                results[key] = {
                    "ready_s": ready_s,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "rps": rps,
                    "bulk_docs_s": docs_s,
                    "rss_mib": rss_mib(process.pid),
                }
            finally:
                os.killpg(process.pid, 15)
                process.wait(timeout=60)
                log.close()

    print(
        f"\n{args.clients} clients, one short text a request "
        f"({'wrk, ' + str(args.seconds) + ' s' if shutil.which('wrk') else args.requests}); "
        f"bulk: {args.bulk_docs} texts"
    )
    print(
        f"{'server':<10} {'ready s':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
        f"{'of model rate':>14} {'bulk docs/s':>12} {'of model rate':>14} {'RSS MiB':>8}"
    )
    for key, r in results.items():
        print(
            f"{key:<10} {r['ready_s']:8.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
            f"{r['rps']:8.1f} {r['rps'] / in_process:14.1%} {r['bulk_docs_s']:12.1f} "
            f"{r['bulk_docs_s'] / in_process:14.1%} {r['rss_mib']:8.0f}"
        )
    ours, lit = results["ours"], results["litserve"]
    print(
        f"\nours / LitServe: {ours['rps'] / lit['rps']:.2f}x requests/s, "
        f"{ours['bulk_docs_s'] / lit['bulk_docs_s']:.2f}x bulk docs/s, "
        f"p50 {ours['p50_ms'] / lit['p50_ms']:.2f}x; Little's law p50 bound at "
        f"{args.clients} clients: {args.clients / ours['rps'] * 1000:.1f} ms (ours)"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}; cores: {len(os.sched_getaffinity(0))}")

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
