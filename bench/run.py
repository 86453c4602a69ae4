"""`make bench`: the whole suite, one part after another (never two at once), then a
table with PASS/FAIL against each target of issue 5, written with the machine, the
versions, the commands and a chart to bench/RESULTS.md and bench/results.png.

    .venv/bin/python -m bench.run [--ingest-seconds 4] [--backlog-window 60]

Bounded: 7 to 9 minutes on 2 cores (the dispatch part alone is 100 s of calls at
20/s, the backlog window 60 s); every part has its own deadlines.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bench import backlog, calls_per_event, dispatch, idle, ingest
from bench.stack import ROOT
from tests.postgres import _bin

HERE = Path(__file__).resolve().parent
RESULTS, CHART = HERE / "RESULTS.md", HERE / "results.png"


@dataclass
class Row:
    part: str
    measure: str
    figure: str
    target: str
    passed: bool | None  # None: a figure without a target of its own

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: ""}[self.passed]


def rows(r: dict) -> list[Row]:
    ing, bare = r["ingest"], r["ingest"]["bare"]["full"]
    bare_half = ing["bare"]["half"]
    out = [
        Row("1 ingest", "bare Flask (baseline)", _rate(bare), "", None),
        Row(
            "1 ingest",
            "bare Flask (baseline): p99 at half its max rate",
            f"{bare_half['p99']:.1f} ms at {bare_half['rate']:.0f}/s{_failures(bare_half)}",
            "",
            None,
        ),
    ]
    for kind, name, share in (("sqlite", "SQLite", 0.60), ("postgresql", "PostgreSQL", 0.45)):
        full, half, ratio = ing[kind]["full"], ing[kind]["half"], ing[kind]["ratio"]
        insert, floor = ing["plain_insert"][kind], ing["stack_floor"][kind]
        out += [
            Row(
                "1 ingest",
                f"bare Flask + one INSERT per request, {name} (the targets' reference)",
                f"{_rate(insert['full'])}; {insert['ratio']:.2f}x bare",
                "",
                None,
            ),
            Row(
                "1 ingest",
                f"the same INSERT through SQLAlchemy Core, {name} (the stack's floor)",
                f"{_rate(floor['full'])}; {floor['ratio']:.2f}x bare",
                "",
                None,
            ),
            Row("1 ingest", f"relay on {name}", _rate(full), "", None),
            Row(
                "1 ingest",
                f"relay / bare, {name}",
                f"{ratio:.2f} ({ratio / insert['ratio']:.2f}x the one-INSERT app, "
                f"{ratio / floor['ratio']:.2f}x the stack's floor)",
                f">= {share:.2f}",
                ratio >= share,
            ),
            Row(
                "1 ingest",
                f"p99 at half max rate, {name}",
                f"{half['p99']:.1f} ms at {half['rate']:.0f}/s{_failures(half)}",
                "< 25 ms",
                half["p99"] < 25 and not _failures(half),
            ),
        ]
    d = r["dispatch"]
    out += [
        Row(
            "2 dispatch",
            f"{d['events']} events, 1 worker: calls/s",
            f"{d['rate']:.2f} ({d['share']:.1%} of 20)",
            ">= 95 %",
            d["share"] >= 0.95,
        ),
        Row("2 dispatch", "HTTP 429 answers", str(d["http_429"]), "0", d["http_429"] == 0),
        Row("2 dispatch", "busiest 1 s window", f"{d['busiest_window']} calls", "<= 20", None),
        Row(
            "2 dispatch",
            f"bare requests.Session at {d['bare_rate']:.1f} calls/s (baseline): CPU per call",
            f"{d['bare_cpu_ms_per_call']:.1f} ms",
            "",
            None,
        ),
        Row(
            "2 dispatch",
            f"the stack's floor at {d['floor_rate']:.1f} calls/s (the session + tenacity, "
            "one SQLAlchemy UPDATE, one structlog line): CPU per call",
            f"{d['floor_cpu_ms_per_call']:.1f} ms",
            "",
            None,
        ),
        Row(
            "2 dispatch",
            "worker CPU per call",
            f"{d['cpu_ms_per_call']:.1f} ms",
            "<= 3 ms",
            d["cpu_ms_per_call"] <= 3,
        ),
    ]
    c = r["calls_per_event"]
    per_event = c["calls"] / c["delivered"]
    out.append(
        Row(
            "3 calls/event",
            f"{c['events']} fixture events ({c['delivered']} delivered)",
            f"{per_event:.2f} (naive {c['naive'] / c['delivered']:.2f})",
            "<= 1.05",
            per_event <= 1.05,
        )
    )
    for i in r["idle"]:
        out.append(
            Row(
                "4 idle latency",
                f"{i['kind']}, 2xx to call, {r['idle_events']} events",
                f"p50 {i['p50']:.1f} ms, p99 {i['p99']:.1f} ms",
                "p50 < 50, p99 < 150 ms",
                i["p50"] < 50 and i["p99"] < 150,
            )
        )
    b = r["backlog"]
    out += [
        Row(
            "5 backlog",
            f"drain with {b['backlog']:,} queued, {b['window_seconds']:.0f} s window",
            f"{b['rate']:.2f} calls/s ({b['share']:.1%} of 20), {b['http_429']} x 429",
            ">= 95 %",
            b["share"] >= 0.95 and b["http_429"] == 0,
        ),
        Row(
            "5 backlog",
            "ingest p99 at 100/s: during drain / idle",
            f"{b['during']['p99']:.1f} / {b['idle']['p99']:.1f} ms = {b['p99_ratio']:.2f}x"
            f"{_failures(b['idle'])}{_failures(b['during'])}",
            "<= 2x",
            b["p99_ratio"] <= 2 and not (_failures(b["idle"]) or _failures(b["during"])),
        ),
    ]
    webs = [
        (ing["sqlite"]["rss_mb"], ing["sqlite"]["pss_mb"]),
        (ing["postgresql"]["rss_mb"], ing["postgresql"]["pss_mb"]),
        (b["web_rss_mb"], b["web_pss_mb"]),
    ]
    web, web_pss = max(webs)  # the run with the largest peak RSS, and its PSS
    worker, worker_pss = max(
        (d["worker_rss_mb"], d["worker_pss_mb"]), (b["worker_rss_mb"], b["worker_pss_mb"])
    )
    bare = ing["bare"]
    floor_web, floor_web_pss = max(
        (ing["stack_floor"][kind]["rss_mb"], ing["stack_floor"][kind]["pss_mb"])
        for kind in ("sqlite", "postgresql")
    )
    out += [
        Row(
            "6 memory",
            "bare Flask web (master + 2 workers)",
            _memory(bare["rss_mb"], bare["pss_mb"]),
            "",
            None,
        ),
        Row(
            "6 memory",
            "the stack's floor: its web (master + 2 workers) + its sender",
            f"{_mb(floor_web)} + {_mb(d['floor_rss_mb'])} = "
            + _memory(floor_web + d["floor_rss_mb"], floor_web_pss + d["floor_pss_mb"]),
            "",
            None,
        ),
        Row("6 memory", "relay web (master + 2 workers), peak", _memory(web, web_pss), "", None),
        Row("6 memory", "relay worker, peak", _memory(worker, worker_pss), "", None),
        Row(
            "6 memory",
            "web + worker",
            _memory(web + worker, web_pss + worker_pss),
            "< 200 MB",
            web + worker < 200,
        ),
    ]
    return out


def _rate(result: dict) -> str:
    return f"{result['rate']:.0f} events/s, p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms"


def _failures(posted: dict) -> str:
    """What went wrong among an open-loop run's posts (not a 2xx, or no answer), if any."""
    failed = posted["errors"] + sum(n for code, n in posted["statuses"].items() if code[0] != "2")
    return f", {failed} of {posted['due']} not answered 2xx" if failed else ""


def _mb(value: float) -> str:
    return f"{value:.0f} MB"


def _memory(rss: float, pss: float) -> str:
    """Peak RSS, the target's measure, and PSS (shared pages divided among the processes
    that map them) beside it."""
    return f"{_mb(rss)} (PSS {_mb(pss)})"


def table(table_rows: list[Row]) -> str:
    lines = ["| part | measure | figure | target | result |", "|---|---|---|---|---|"]
    lines += [
        f"| {r.part} | {r.measure} | {r.figure} | {r.target} | {r.verdict} |" for r in table_rows
    ]
    return "\n".join(lines)


def console(table_rows: list[Row]) -> str:
    return "\n".join(
        f"{r.part:15} {r.measure:45} {r.figure:48} {r.target:22} {r.verdict}" for r in table_rows
    )


def chart(r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ing = r["ingest"]
    bare = ing["bare"]["full"]["rate"]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4.2))
    names = [
        "bare\nFlask",
        "one\nINSERT\nSQLite",
        "stack's\nfloor\nSQLite",
        "relay\nSQLite",
        "one\nINSERT\nPG",
        "stack's\nfloor\nPG",
        "relay\nPG",
    ]
    # the table's ratios (each the median of the rounds' ratios), so bar and PASS agree
    ratios = [
        1.0,
        ing["plain_insert"]["sqlite"]["ratio"],
        ing["stack_floor"]["sqlite"]["ratio"],
        ing["sqlite"]["ratio"],
        ing["plain_insert"]["postgresql"]["ratio"],
        ing["stack_floor"]["postgresql"]["ratio"],
        ing["postgresql"]["ratio"],
    ]
    colors = ["#999999", "#a9c7ee", "#7aa7e3", "#3b7dd8", "#a6dcbc", "#6cc393", "#2a9d5c"]
    left.bar(names, ratios, color=colors)
    left.tick_params(axis="x", labelsize=7)
    left.axhline(0.60, color="#3b7dd8", linestyle="--", label="SQLite target 0.60")
    left.axhline(0.45, color="#2a9d5c", linestyle=":", label="PostgreSQL target 0.45")
    left.set_title(f"1. Ingest, 32 connections (bare: {bare:,.0f} events/s)")
    left.set_ylabel("accepted events/s, as a share of bare Flask")
    left.legend(fontsize=7)

    d, b = r["dispatch"], r["backlog"]
    middle.bar(
        [f"dispatch\n{d['events']:,} backlog", f"drain\n{b['backlog']:,} + 100/s"],
        [d["rate"], b["rate"]],
    )
    middle.axhline(20, color="black", label="Kartra limit 20/s")
    middle.axhline(19, color="black", linestyle="--", label="95 % target")
    middle.set_ylim(0, 22)
    middle.set_title("2 & 5. Kartra calls/s, one worker")
    middle.legend(fontsize=7, loc="lower right")

    labels, p50s, p99s = [], [], []
    for i in r["idle"]:
        labels.append(f"idle\n{i['kind']}")
        p50s.append(i["p50"])
        p99s.append(i["p99"])
    for kind in ("bare", "sqlite", "postgresql"):
        labels.append(f"ingest\nhalf rate\n{kind}")
        p50s.append(ing[kind]["half"]["p50"])
        p99s.append(ing[kind]["half"]["p99"])
    labels += ["ingest\n100/s idle", "ingest\n100/s drain"]
    p50s += [b["idle"]["p50"], b["during"]["p50"]]
    p99s += [b["idle"]["p99"], b["during"]["p99"]]
    x = range(len(labels))
    right.bar([i - 0.2 for i in x], p50s, width=0.4, label="p50")
    right.bar([i + 0.2 for i in x], p99s, width=0.4, label="p99")
    right.set_xticks(list(x), labels, fontsize=7)
    right.set_ylabel("ms")
    right.set_title("4, 1 & 5. Latencies")
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(CHART, dpi=110)
    plt.close(figure)


def _command(*args: str) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def machine(commit: str, load_start: float) -> list[str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        int(line.split()[1]) // 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    debian = Path("/etc/debian_version")
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; RAM {memory / 1024:.1f} GB",
        f"- OS: Debian {debian.read_text().strip() if debian.exists() else '?'}, "
        f"Linux {platform.release()}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{_command(_bin('postgres'), '--version')}",
        f"- gunicorn {version('gunicorn')} (gthread), Flask {version('flask')}, "
        f"SQLAlchemy {version('sqlalchemy')}, psycopg {version('psycopg')}, "
        + " ".join(_command(ingest.ensure_wrk(), "-v").split()[:2]),
        f"- commit {commit}",
        f"- load average (1 min) {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at "
        "the end: the machine is shared, and other processes running at the same time "
        "take CPU from the relay and its baselines alike",
    ]


def report(r: dict, table_rows: list[Row], started: datetime, seconds: float, **run) -> str:
    ing = r["ingest"]
    command = ing["postgresql"]["full"]["command"]
    half = ing["postgresql"]["half"]["command"]
    return "\n".join(
        [
            "# Benchmark results",
            "",
            f"Written by `make bench` on {started:%Y-%m-%d %H:%M} UTC; the run took "
            f"{seconds / 60:.1f} minutes. Every figure below is from that one run; the "
            "baselines ran on the same machine in the same run.",
            "",
            "## Machine and versions",
            "",
            *machine(**run),
            "",
            "## Results",
            "",
            table(table_rows),
            "",
            "![charts](results.png)",
            "",
            "## Commands",
            "",
            "- `make bench` = `.venv/bin/python -m bench.run`, which runs, one at a time:",
            "  `python -m bench.ingest`, `python -m bench.dispatch`, "
            "`python -m bench.calls_per_event`, `python -m bench.idle --events 200`, "
            "`python -m bench.backlog`.",
            "- Ingest: gunicorn as the Procfile runs it (`gunicorn app:app`, settings from "
            "`gunicorn.conf.py`: 2 processes x 8 threads, gthread), the bare baseline the "
            "same way (`gunicorn bench.bare:app`), and so the targets' reference, bare "
            "Flask plus one INSERT and commit per request on each database "
            "(`gunicorn bench.plain_insert:app`), and the chosen stack's floor, the same "
            "INSERT through SQLAlchemy Core (`PLAIN_INSERT_THROUGH=sqlalchemy`: a pooled "
            "connection from `engine.begin()`); all seven up at once; load from wrk in "
            f"another process, 2 s warm-up each, then {ing['rounds']} rounds that run "
            f"`{command}` (max rate) on each server in turn; a ratio to bare is the "
            "median of the rounds' ratios, a server's figures are its median round's. "
            "Then `bench/openloop.py` at half each server's rate, bare's and each "
            f"relay's: `{half}` (open loop: a "
            "constant rate over 32 keep-alive "
            "connections, each request timed from when it was due, so requests queued "
            "behind a slow one count their wait).",
            f"- Ingest request: a {len(ingest.event_body('x', 0))}-byte Stripe "
            "`checkout.session.completed`, a new event id per request, signed with "
            "`Stripe-Signature: t=...,v1=...`, to a route with "
            "`mappings/examples/stripe.yaml` (verify, map: tag + list + remember the "
            "customer); SQLite in WAL with synchronous=NORMAL; PostgreSQL "
            f"{_command(_bin('postgres'), '--version').split()[-1]} with fsync=on and "
            "synchronous_commit=on (the default), a throwaway cluster on the same disk.",
            "- Dispatch and backlog: PostgreSQL, `python -m relay worker` (one), the fake "
            "Kartra (`python -m relay.kartra.fake --rate-limit 20 --latency-ms 250 "
            "--jitter-ms 100`); the backlog is stored the way ingest stores events, in "
            "transactions of 100, without HTTP. Dispatch's baseline, against the same "
            "fake first: `python -m bench.bare_sender` (a bare requests.Session from 12 "
            "threads, paced at the limiter's rate); then the stack's floor, "
            "`python -m bench.bare_sender --finish DATABASE_URL` (each call through "
            "tenacity, then one UPDATE of its row through SQLAlchemy Core on PostgreSQL, "
            "committed, and one structlog JSON line).",
            "- Backlog: draining 10,000 calls at 20/s takes more than 8 minutes, more "
            "than the suite's 10-minute budget, so the drain rate is measured over a "
            f"{r['backlog']['window_seconds']:.0f} s window with the backlog in place "
            f"({r['backlog']['calls']} calls), not to the end. Ingest during the window: "
            "demo-form posts at 100/s from `bench/openloop.py` over 8 keep-alive "
            "connections, each timed from when it was due; idle = the same load for 15 s "
            "before the backlog is queued.",
            "- Memory: VmHWM (peak resident set) from /proc of gunicorn's master and its "
            "workers, summed, and of the worker process, read at the end of parts 1, 2 "
            "and 5; the largest of each is shown; the stack's floor: its web's (the "
            "larger of its two databases') and its sender's own at its end. PSS in "
            "brackets (`/proc/PID/smaps_rollup`, read at the same moment, not a peak): "
            "RSS counts a page shared by several processes in each of them, PSS divides "
            "it among them.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ingest-seconds", type=int, default=4, help="each of ingest's full-speed runs"
    )
    parser.add_argument("--dispatch-events", type=int, default=2000)
    parser.add_argument("--idle-events", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--backlog-window", type=float, default=60.0)
    options = parser.parse_args()
    started, clock = datetime.now(UTC), time.monotonic()
    run = {
        "commit": _command("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"),
        "load_start": os.getloadavg()[0],
    }
    results: dict = {"idle_events": options.idle_events}
    parts = [
        ("ingest", lambda: ingest.measure(options.ingest_seconds)),
        ("dispatch", lambda: dispatch.measure(options.dispatch_events)),
        ("calls_per_event", calls_per_event.measure),
        ("idle", lambda: idle.run(options.idle_events)),
        ("backlog", lambda: backlog.measure(options.backlog, options.backlog_window)),
    ]
    for name, measure in parts:
        print(f"[{time.monotonic() - clock:5.0f} s] {name}...", flush=True)
        results[name] = measure()
    seconds = time.monotonic() - clock
    table_rows = rows(results)
    print(console(table_rows))
    chart(results)
    RESULTS.write_text(report(results, table_rows, started, seconds, **run))
    print(f"written: {RESULTS.relative_to(ROOT)}, {CHART.relative_to(ROOT)} ({seconds:.0f} s)")
    if any(row.passed is False for row in table_rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
