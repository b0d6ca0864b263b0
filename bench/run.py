#!/usr/bin/env python3
"""Latency and throughput of the session API's four hot operations.

    python bench/run.py [--base-url http://127.0.0.1:8011] [--requests 2000]
                        [--concurrency 8] [--seed 0] [--json]

Runs, one after the other, each with --requests requests spread over
--concurrency threads (one keep-alive ``requests.Session`` per thread):

    create  POST  /sessions/                           (201)
    get     GET   /sessions/{id}                       (200)
    patch   PATCH /sessions/{id}  new checkpoint, JSON (200)
    list    GET   /sessions/?agent_id=...&limit=20     (200)

get and patch address the sessions made by create, round-robin (so no two
threads fight over one row unless there are more threads than sessions); list
asks for the agents that create used, each of which then has more than 20
sessions. --seed N first stores N more sessions (of other agents) through the
API, so that the table is not nearly empty.

It only ever talks to a loopback address (127.0.0.0/8, ::1, or a name that
resolves only to those), ignores proxy settings and never follows redirects.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

AGENTS = 20  # agents of the measured sessions: list pages are full (limit=20)
TIMEOUT = 30.0


class Refused(SystemExit):
    pass


def require_loopback(base_url: str) -> str:
    """The base URL without its trailing slash, if it names a loopback host; else exit."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"--base-url must be an http(s) URL with a host, got {base_url!r}")
    if parts.username or parts.password:
        raise Refused("--base-url must not carry credentials")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused(f"--base-url has a bad port: {base_url!r}") from None
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise Refused(f"cannot resolve {host!r}: {exc}") from None
        addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
    outside = sorted(str(a) for a in addresses if not a.is_loopback)
    if not addresses or outside:
        raise Refused(f"refusing to benchmark {host!r}: not a loopback address ({', '.join(outside) or 'none'})")
    return base_url.rstrip("/")


def checkpoint(step: int) -> dict:
    """A checkpoint of the size the specification's examples have."""
    return {
        "step": step,
        "completed_actions": ["analyze", "design", "implement"][: step % 4],
        "pending_actions": ["test", "review"],
        "state_snapshot": {"files_modified": ["a.ts", "b.ts"], "test_results": None},
        "resume_prompt": f"Continue from step {step + 1}",
    }


def create_body(agent_id: str, n: int) -> dict:
    return {
        "agent_id": agent_id,
        "session_type": "development",
        "context": {
            "working_directory": "/project",
            "current_task": f"Benchmark task {n}",
            "files_open": ["SteamModal.tsx", "animations.ts"],
        },
        "runtime_backend": "local",
        "runtime_metadata": {"terminal_id": f"term-{n}", "pid": 10000 + n},
    }


@dataclass
class Result:
    name: str
    request: str
    expected: int
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # the first few, for the report
    wall: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return sum(self.statuses.values()) - self.ok

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile, in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
        return ordered[rank - 1] * 1000

    def summary(self) -> dict:
        return {
            "operation": self.name,
            "request": self.request,
            "requests": sum(self.statuses.values()),
            "ok": self.ok,
            "errors": self.failed,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=lambda kv: str(kv[0]))},
            "seconds": round(self.wall, 3),
            "throughput_rps": round(self.ok / self.wall, 1) if self.wall else None,
            "latency_ms": {
                "mean": round(sum(self.latencies) / self.ok * 1000, 2) if self.ok else None,
                "median": round(self.percentile(50), 2),
                "p95": round(self.percentile(95), 2),
                "p99": round(self.percentile(99), 2),
                "max": round(max(self.latencies) * 1000, 2) if self.ok else None,
            },
        }


# One request of a phase: (session, n) -> response.
Call = Callable[[requests.Session, int], requests.Response]


class Runner:
    def __init__(self, base_url: str, concurrency: int) -> None:
        self.base_url = base_url
        self.concurrency = concurrency
        self._local = threading.local()

    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy: the traffic stays on loopback
            session.headers["Accept"] = "application/json"
            self._local.session = session
        return session

    def run(self, result: Result, total: int, call: Call, on_ok: Callable[[requests.Response], None] | None = None):
        """Make `total` calls over the threads; record each one's latency and status."""
        counter = iter(range(total))
        lock = threading.Lock()

        def worker() -> None:
            session = self.session()
            latencies, statuses, errors = [], Counter(), []
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    break
                started = time.perf_counter()
                try:
                    response = call(session, n)
                except requests.RequestException as exc:
                    statuses[type(exc).__name__] += 1
                    if len(errors) < 3:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - started
                statuses[response.status_code] += 1
                if response.status_code == result.expected:
                    latencies.append(elapsed)
                    if on_ok is not None:
                        on_ok(response)
                elif len(errors) < 3:
                    errors.append(f"{response.status_code}: {response.text[:300]}")
            with lock:
                result.latencies.extend(latencies)
                result.statuses.update(statuses)
                result.errors.extend(errors[: max(0, 5 - len(result.errors))])

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.concurrency)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        result.wall = time.perf_counter() - started
        return result


def benchmark(args: argparse.Namespace) -> list[Result]:
    base = args.base_url
    runner = Runner(base, args.concurrency)
    agents = [str(uuid.uuid4()) for _ in range(AGENTS)]
    url = f"{base}/sessions/"

    def post(agent_of: Callable[[int], str]) -> Call:
        return lambda s, n: s.post(url, json=create_body(agent_of(n), n), timeout=TIMEOUT, allow_redirects=False)

    # The service answers at all?
    try:
        health = runner.session().get(f"{base}/healthz", timeout=5, allow_redirects=False)
    except requests.RequestException as exc:
        raise SystemExit(f"cannot reach {base}: {exc}") from None
    if health.status_code != 200:
        raise SystemExit(f"{base}/healthz answered {health.status_code}: {health.text[:200]}")

    if args.seed:
        log(f"seeding {args.seed} sessions ...")
        seed = runner.run(Result("seed", "POST /sessions/", 201), args.seed, post(lambda n: str(uuid.uuid4())))
        log(f"  seeded {seed.ok} in {seed.wall:.1f}s ({seed.ok / seed.wall:.0f}/s), {seed.failed} failed")

    # Warm-up: open every thread's connection and let each worker load its code paths.
    if args.warmup:
        runner.run(Result("warm-up", "GET /sessions/", 200), args.warmup, lambda s, n: s.get(url, timeout=TIMEOUT))

    ids: list[str] = []
    ids_lock = threading.Lock()

    def remember(response: requests.Response) -> None:
        with ids_lock:
            ids.append(response.json()["id"])

    results = []
    log("create ...")
    results.append(
        runner.run(
            Result("create", "POST /sessions/", 201),
            args.requests,
            post(lambda n: agents[n % AGENTS]),
            on_ok=remember,
        )
    )
    if not ids:
        raise SystemExit(f"no session could be created: {results[0].errors}")

    log("get ...")
    results.append(
        runner.run(
            Result("get", "GET /sessions/{id}", 200),
            args.requests,
            lambda s, n: s.get(f"{url}{ids[n % len(ids)]}", timeout=TIMEOUT, allow_redirects=False),
        )
    )
    log("patch ...")
    results.append(
        runner.run(
            Result("patch", "PATCH /sessions/{id} (checkpoint)", 200),
            args.requests,
            lambda s, n: s.patch(
                f"{url}{ids[n % len(ids)]}", json={"checkpoint": checkpoint(n)}, timeout=TIMEOUT, allow_redirects=False
            ),
        )
    )
    log("list ...")
    results.append(
        runner.run(
            Result("list", "GET /sessions/?agent_id=...&limit=20", 200),
            args.requests,
            lambda s, n: s.get(
                url, params={"agent_id": agents[n % AGENTS], "limit": 20}, timeout=TIMEOUT, allow_redirects=False
            ),
        )
    )
    return results


def table(results: list[Result]) -> str:
    header = ("operation", "request", "ok", "errors", "req/s", "mean ms", "median", "p95", "p99", "max")
    rows = []
    for r in results:
        s = r.summary()
        lat = s["latency_ms"]
        rows.append(
            (
                r.name,
                r.request,
                str(s["ok"]),
                str(s["errors"]),
                f"{s['throughput_rps'] or 0:.1f}",
                *(f"{lat[k]:.1f}" if lat[k] is not None else "-" for k in ("mean", "median", "p95", "p99", "max")),
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for i, row in enumerate([header, *rows]):
        cells = [cell.ljust(widths[j]) if j < 2 else cell.rjust(widths[j]) for j, cell in enumerate(row)]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8011", help="loopback only (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per operation (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="first store N more sessions via the API")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests first (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.seed < 0 or args.warmup < 0:
        parser.error("--seed and --warmup must not be negative")
    if args.requests > 1_000_000 or args.seed > 1_000_000 or args.concurrency > 256:
        parser.error("keep it bounded: at most 1,000,000 requests or seeds and 256 threads")
    args.base_url = require_loopback(args.base_url)

    results = benchmark(args)
    failed = sum(r.failed for r in results)
    if args.json:
        report = {
            "base_url": args.base_url,
            "requests_per_operation": args.requests,
            "concurrency": args.concurrency,
            "seeded": args.seed,
            "results": [r.summary() for r in results],
        }
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.base_url}: {args.requests} requests per operation, {args.concurrency} threads")
        print(table(results))
    for r in results:
        for error in r.errors:
            log(f"{r.name}: {error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
