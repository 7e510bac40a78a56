"""Load test of ``causal2vec serve`` on loopback: does dynamic batching pay?

Starts ``causal2vec serve --model default`` (the real default, in its auto dtype) on 127.0.0.1 and sends single-text
``/v1/embeddings`` requests from 1, 8 and 32 concurrent clients, a bounded number each (``--requests`` per client,
after one warm-up round). For each it reports requests/s, p50 and p99 latency and the mean model batch size (from the
server's ``/metrics``). Every response is checked against ``encode()`` of the same model and dtype in this process
(lowest cosine shown; batches pad differently, so bfloat16 rows differ in the last bits). Target: at 32 clients,
throughput is at least 3x the 1-client throughput.

``--workload passages`` (the default) sends a BBC validation title with the first 300 characters of its article,
as a document; ``--workload queries`` sends the titles alone as queries (the query instruction applied), the
short texts a retrieval front end sends one at a time. The run ends with the model's own ``encode`` in this process,
one text at a time against batches of 32 of the same texts: the most any batching can give on this machine.

    .venv/bin/python bench/serve.py                      # ~6 minutes on 2 CPU cores
    .venv/bin/python bench/serve.py --workload queries --clients 1,8,32 --requests 8
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {"passages": "document", "queries": "query"}  # workload -> the requests' input_type


def post(url: str, text: str, input_type: str) -> tuple[float, list[float]]:
    """One request: its latency and the embedding."""
    body = json.dumps({"input": text, "model": "default", "input_type": input_type}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - start, answer["data"][0]["embedding"]


def batch_totals(base: str) -> tuple[float, float]:
    """(texts embedded, batches run) so far, from /metrics."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    total = float(re.search(r"^causal2vec_batch_size_sum (\S+)$", text, re.M).group(1))
    count = float(re.search(r"^causal2vec_batch_size_count (\S+)$", text, re.M).group(1))
    return total, count


def run_level(base: str, texts: list[str], clients: int, per_client: int, input_type: str) -> dict[str, object]:
    """``clients`` threads, each sending ``per_client`` requests one after another."""
    jobs = [texts[(c * per_client + i) % len(texts)] for c in range(clients) for i in range(per_client)]
    before = batch_totals(base)
    start = time.perf_counter()

    def client(c: int) -> list[tuple[str, float, list[float]]]:
        out = []
        for text in jobs[c * per_client : (c + 1) * per_client]:
            latency, vector = post(f"{base}/v1/embeddings", text, input_type)
            out.append((text, latency, vector))
        return out

    with ThreadPoolExecutor(clients) as pool:
        results = [r for rows in pool.map(client, range(clients)) for r in rows]
    wall = time.perf_counter() - start
    after = batch_totals(base)
    latencies = sorted(r[1] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "rps": len(results) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "mean_batch": (after[0] - before[0]) / max(after[1] - before[1], 1),
        "results": results,
    }


def model_ceiling(encode, texts: list[str], rounds: int = 3) -> tuple[float, float]:
    """Texts/s of the model's own ``encode`` one text at a time and in batches of 32, in this process.

    Their ratio is the most any batching can give on this machine for these texts: a server that batches perfectly
    and costs nothing reaches it. Rounds alternate between the two, and each keeps its best (the machine is shared).
    """
    texts = texts[:32]
    encode(texts[:4], batch_size=4)  # warm-up
    single, batched = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for text in texts:
            encode([text], batch_size=1)
        single.append(time.perf_counter() - start)
        start = time.perf_counter()
        encode(texts, batch_size=32)
        batched.append(time.perf_counter() - start)
    return len(texts) / min(single), len(texts) / min(batched)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (1,8,32)")
    parser.add_argument("--requests", type=int, default=6, help="requests per client at each level (6)")
    parser.add_argument("--model", default="default", help="the model to serve (default)")
    parser.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        default="passages",
        help="passages: a title and the first 300 characters of its article, as documents (the default); queries: "
        "the titles alone, as queries (input_type query: the instruction is applied)",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    from causal2vec import Causal2Vec
    from causal2vec.data.bbc import bbc_news_split
    from causal2vec.runtime import auto_dtype

    input_type = WORKLOADS[args.workload]
    articles = bbc_news_split("validation")
    texts = [a.title if input_type == "query" else f"{a.title}. {a.body[:300]}" for a in articles]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "causal2vec", "serve", "--model", args.model, "--device", "cpu", "--port",
               str(port), "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        info = json.loads(urllib.request.urlopen(f"{base}/info").read())
        run_level(base, texts, max(levels), 1, input_type)  # warm-up: every batch shape the levels will see, once
        rows = [run_level(base, texts, clients, args.requests, input_type) for clients in levels]
    finally:
        server.terminate()
        server.wait(120)

    model = Causal2Vec.from_pretrained(args.model, device="cpu", dtype=auto_dtype("auto", "cpu"))
    sent = sorted({r[0] for row in rows for r in row["results"]})
    encode = model.encode_query if input_type == "query" else model.encode_document
    reference = dict(zip(sent, encode(sent), strict=True))
    cosines = [
        float(np.dot(np.asarray(vector), reference[text]) / np.linalg.norm(vector) / np.linalg.norm(reference[text]))
        for row in rows
        for text, _, vector in row["results"]
    ]
    print(f"\ncausal2vec serve, model {info['model']} ({info['backend']}, {info['precision']}, {info['device']}); "
          f"single-text requests of BBC News validation {args.workload} ({WORKLOADS[args.workload]}s); "
          f"{args.requests} per client\n")  # fmt: skip
    print("| clients | requests | requests/s | p50 latency (ms) | p99 latency (ms) | mean batch size | vs 1 client |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    single = next((r["rps"] for r in rows if r["clients"] == 1), None)
    for r in rows:
        ratio = f"{r['rps'] / single:.2f}x" if single else "-"
        print(f"| {r['clients']} | {r['requests']} | {r['rps']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
              f"{r['mean_batch']:.2f} | {ratio} |")  # fmt: skip
    print(f"\nevery response against encode() of the same text: lowest cosine {min(cosines):.6f} over {len(cosines)}")
    one, many = model_ceiling(encode, texts)
    print(f"the model alone, in this process: {one:.2f} texts/s one at a time, {many:.2f} in batches of 32 "
          f"({many / one:.2f}x): the most batching can give on this machine")  # fmt: skip
    correct = min(cosines) >= 0.999
    top = next((r["rps"] for r in rows if r["clients"] == 32), None)
    if single and top:
        verdict = "PASS" if top >= 3 * single and correct else "FAIL"
        print(f"target (32 clients >= 3x 1 client, every response correct): {verdict} ({top / single:.2f}x)")


if __name__ == "__main__":
    main()
