"""An open-loop load generator: requests at a constant rate, each timed from when it
was due, in a process of its own.

Request n is due at start + n / rate, whether or not the server has answered the ones
before it. Each of `connections` keep-alive connections takes the next request as soon
as it is free and sends it when it is due; when every connection is busy, the request
goes late and its wait counts in its latency, which runs from when it was due to when
its answer has been read (wrk2's measure: a server that stalls cannot hide the
requests that queued behind the stall, as it can from a client that waits for each
answer before it sends the next one).

It is asyncio over plain sockets, one thread, the requests written out beforehand: at
a few hundred requests a second it takes a few percent of one core, and it reports
its own CPU time so a run can show that.

    python -m bench.openloop URL REQUESTS.jsonl --rate 300 --seconds 10 [--connections 32]

REQUESTS.jsonl holds one request per line, `{"headers": {...}, "body": "..."}`, sent
in turn as POSTs to URL; the file must hold at least rate x seconds of them.
The result is one JSON object on stdout. `measure()` writes the file and runs it so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit


def raw_post(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one answer: its status and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ValueError(f"answer without Content-Length: {status_line}")
    await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers.get("connection", "").lower() != "close"


async def run(
    url: str, requests: list[bytes], rate: float, seconds: float, connections: int
) -> dict:
    parts = urlsplit(url)
    total = int(rate * seconds)
    if total > len(requests):
        raise ValueError(f"{total} requests needed, {len(requests)} given")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    following = iter(range(total))
    start = time.monotonic() + 0.1

    async def connection() -> None:
        reader = writer = None
        for n in following:
            due = start + n / rate
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                writer.write(requests[n])
                status, keep = await _answer(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                keep = False
            else:
                latencies.append((time.monotonic() - due) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.wait_for(
        asyncio.gather(*(connection() for _ in range(connections))), timeout=seconds + 60
    )
    elapsed = time.monotonic() - start
    used = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()
    answered = len(latencies)
    return {
        "due": total,
        "answered": answered,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": len(errors),
        "first_errors": errors[:3],
        "rate": answered / elapsed,
        "p50": latencies[answered // 2] if answered else None,
        "p99": latencies[min(answered - 1, int(answered * 0.99))] if answered else None,
        "max": latencies[-1] if answered else None,
        "generator_cpu": (used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime) / elapsed,
    }


def read_requests(url: str, path: Path) -> list[bytes]:
    parts = urlsplit(url)
    out = []
    with path.open() as lines:
        for line in lines:
            item = json.loads(line)
            body = item["body"].encode()
            out.append(raw_post(parts.hostname, parts.port, parts.path, item["headers"], body))
    return out


def measure(
    url: str,
    requests: Iterable[tuple[dict[str, str], bytes]],
    rate: float,
    seconds: float,
    work: Path,
    connections: int = 32,
) -> dict:
    """POST `requests` ((headers, body) pairs, at least rate x seconds of them) to `url`
    at `rate` for `seconds`, from this generator in a process of its own."""
    path = work / f"openloop-{time.monotonic_ns()}.jsonl"
    with path.open("w") as out:
        for headers, body in requests:
            out.write(json.dumps({"headers": headers, "body": body.decode()}) + "\n")
    command = [
        sys.executable,
        "-m",
        "bench.openloop",
        url,
        str(path),
        "--rate",
        f"{rate:g}",
        "--seconds",
        f"{seconds:g}",
        "--connections",
        str(connections),
    ]
    out = subprocess.run(
        command,
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=seconds + 90,
        check=True,
    ).stdout
    path.unlink()
    result = json.loads(out)
    if not result["answered"]:
        raise SystemExit(f"{url} answered none of {result['due']}: {result['first_errors']}")
    shown = " ".join(["python", *command[1:3], "URL", "REQUESTS", *command[5:]])
    return {**result, "command": shown}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("requests", type=Path)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=32)
    options = parser.parse_args()
    requests = read_requests(options.url, options.requests)
    result = asyncio.run(
        run(options.url, requests, options.rate, options.seconds, options.connections)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
