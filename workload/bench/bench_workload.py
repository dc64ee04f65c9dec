"""`make bench-workload`: the durable webhook against a bare Starlette ceiling, and the
worker's end-to-end credit rate, on this machine, in one run. Not a test: prints a table.

(a) ceiling: bare Starlette handler answering 202, same uvicorn settings;
(b) durable webhook: verify + validate + INSERT (committed) + 202 + enqueue to Redis;
(c) deposits credited per second with N worker processes, from a queue filled beforehand.
Load comes from separate processes: wrk (saturation) and an open-loop generator at a fixed
rate (fixed_rate.py). (a) and (b) alternate for several rounds; the table keeps each one's
median and the spread is printed, with the load average and each server's CPU time per
request (the part of the comparison that other tenants of the machine disturb least).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import redis as redis_lib
from cricalgo_localstack.deposits import deposit_body, new_secret, signed_headers
from cricalgo_localstack.processes import free_port
from cricalgo_localstack.services import PostgresServer, RedisServer
from cricalgo_workload.broker import close_broker, credit_queue
from cricalgo_workload.migrations import migrate
from cricalgo_workload.settings import Settings
from cricalgo_workload.worker import DepositWorker

HERE = Path(__file__).parent
USERS = [f"user{i}" for i in range(100)]


_created: list[Path] = []


def private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"cricalgo-bench-{prefix}-"))
    path.chmod(0o700)
    _created.append(path)
    return path


def write_deliveries(secret: str, count: int, directory: Path, name: str) -> tuple[Path, Path]:
    """`count` signed, distinct deliveries as a Lua table (wrk) and as JSON lines."""
    lua, jsonl = directory / f"{name}.lua", directory / f"{name}.jsonl"
    with lua.open("w") as lf, jsonl.open("w") as jf:
        lf.write("return {\n")
        for i in range(count):
            body = deposit_body(user_id=USERS[i % len(USERS)], amount=f"{1 + i % 500}.25")
            h = signed_headers(secret, body, webhook_id=f"msg_{uuid.uuid4().hex}")
            text = body.decode()
            lf.write(
                f'{{"{h["webhook-id"]}","{h["webhook-timestamp"]}",'
                f'"{h["webhook-signature"]}",[==[{text}]==]}},\n'
            )
            jf.write(
                json.dumps(
                    {
                        "id": h["webhook-id"],
                        "ts": h["webhook-timestamp"],
                        "sig": h["webhook-signature"],
                        "body": text,
                    }
                )
                + "\n"
            )
        lf.write("}\n")
    return lua, jsonl


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux /proc)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def with_process_tree(root: int) -> list[int]:
    """`root` and its direct children (PostgreSQL's backends are the postmaster's)."""
    pids = [root]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            if parent == root:
                pids.append(int(entry.name))
    return pids


def measured(
    run: Callable[[], dict[str, float]], server: int, services: list[int]
) -> dict[str, float]:
    """`run()`'s result plus the CPU per request of the server and of PostgreSQL + Redis,
    and the load average when it ended."""
    service_pids = [pid for root in services for pid in with_process_tree(root)]
    before = cpu_seconds([server]), cpu_seconds(service_pids)
    result = run()
    service_pids = [pid for root in services for pid in with_process_tree(root)]
    after = cpu_seconds([server]), cpu_seconds(service_pids)
    requests = result["rps"] * result["seconds"]
    result["server_us"] = (after[0] - before[0]) / requests * 1e6
    result["services_us"] = max(0.0, after[1] - before[1]) / requests * 1e6
    result["load"] = os.getloadavg()[0]
    return result


def wrk(url: str, lua: Path, seconds: int, connections: int, threads: int = 1) -> dict[str, float]:
    env = {**os.environ, "BENCH_REQUESTS": str(lua), "BENCH_THREADS": str(threads)}
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
         "-s", str(HERE / "requests.lua"), url],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    n, duration_us, p50, p95, p99, errors = (int(v) for v in line.split()[1:])
    return {
        "rps": n / (duration_us / 1e6),
        "seconds": duration_us / 1e6,
        "p50_ms": p50 / 1000,
        "p95_ms": p95 / 1000,
        "p99_ms": p99 / 1000,
        "errors": errors,
    }


def fixed_rate(url: str, jsonl: Path, rate: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(HERE / "fixed_rate.py"), url, str(jsonl), str(rate), str(seconds)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result: dict[str, float] = json.loads(out)
    result["seconds"] = result["requests"] / result["rps"]
    return result


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen(args, env={**os.environ, **env}, stdout=f, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def credit_rate(
    settings: Settings, env: dict[str, str], workers: int, count: int, logs: Path
) -> float:
    """Deposits credited per second by `workers` worker processes draining `count` messages."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO deposit_inbox (tx_id, provider, event_id, user_id, amount, currency,"
            " provider_reference, payload)"
            " SELECT gen_random_uuid(), 'bench-e2e', %s || g, 'user' || (g %% 100), 5, 'EUR',"
            " 'r' || %s || g, '\\x'::bytea FROM generate_series(1, %s) g",
            (f"w{workers}-", f"w{workers}-", count),
        )
        tx_ids = [
            str(r[0])
            for r in conn.execute(
                "SELECT tx_id FROM deposit_inbox WHERE event_id LIKE %s", (f"w{workers}-%",)
            )
        ]
    enqueuer = DepositWorker(settings)
    credit_queue(enqueuer.broker, settings).send(tx_ids)
    close_broker(enqueuer.broker)
    enqueuer.pool.close()
    procs = [
        start(
            [sys.executable, "-m", "cricalgo_workload", "worker"],
            {**env, "CRICALGO_METRICS_PORT": str(free_port())},
            logs / f"worker-{workers}-{i}.log",
        )
        for i in range(workers)
    ]
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with psycopg.connect(settings.database_url) as conn:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'done'),"
                    " extract(epoch FROM max(processed_at) - min(processed_at))"
                    " FROM deposit_inbox WHERE event_id LIKE %s",
                    (f"w{workers}-%",),
                ).fetchone()
            assert row is not None
            if row[0] == count:
                return count / float(row[1])
            time.sleep(0.5)
        raise RuntimeError("workers did not drain the queue")
    finally:
        for p in procs:
            stop(p)


def crediting_latency(
    hook_url: str, jsonl: Path, env: dict[str, str], dsn: str, rate: int, seconds: int, logs: Path
) -> dict[str, float]:
    """Deposits sent at `rate`/s for `seconds` through the webhook to one worker process:
    the time from the inbox row (written before the 202) to its ledger entry, p50/p99."""
    # The runs before left their deposits queued (no worker ran): start from an empty
    # backlog, and count only this run's deposits.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM deposit_inbox WHERE status = 'pending'")
        started = conn.execute("SELECT now()").fetchone()
    with redis_lib.Redis.from_url(env["REDIS_URL"]) as client:
        client.flushdb()
    worker = start(
        [sys.executable, "-m", "cricalgo_workload", "worker"],
        {**env, "CRICALGO_METRICS_PORT": str(free_port())},
        logs / "worker-latency.log",
    )
    try:
        sent = fixed_rate(hook_url, jsonl, rate, seconds)
        with psycopg.connect(dsn) as conn:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM deposit_inbox WHERE provider = 'default'"
                    " AND status = 'pending'"
                ).fetchone()
                if row is not None and row[0] == 0:
                    break
                time.sleep(0.5)
            row = conn.execute(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d),"
                " percentile_cont(0.99) WITHIN GROUP (ORDER BY d), count(*)"
                " FROM (SELECT extract(epoch FROM l.created_at - i.received_at) * 1000 AS d"
                " FROM ledger_entries l JOIN deposit_inbox i USING (tx_id)"
                " WHERE i.received_at >= %s) s",
                (started[0] if started else None,),
            ).fetchone()
        if row is None or not row[2]:
            raise RuntimeError(f"nothing credited; see {logs / 'worker-latency.log'}")
        return {"p50_ms": row[0], "p99_ms": row[1], "credited": row[2], "rps": sent["rps"]}
    finally:
        stop(worker)


def median_run(results: list[dict[str, float]], key: str) -> dict[str, float]:
    return sorted(results, key=lambda r: r[key])[len(results) // 2]


def spread(values: list[float], fmt: str) -> str:
    return (
        " ".join(format(v, fmt) for v in values)
        + f" (median {format(statistics.median(values), fmt)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--drain", type=int, default=3000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-rate", type=int, default=300)
    parser.add_argument("--latency-seconds", type=int, default=60)
    args = parser.parse_args()

    scratch = private_dir("run")
    redis_server = RedisServer(private_dir("redis"))
    postgres = PostgresServer(private_dir("postgres"))
    redis_server.start()
    postgres.start()
    processes: list[subprocess.Popen[bytes]] = []
    load_start = os.getloadavg()
    try:
        dsn = postgres.create_database("bench")
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for user in USERS:
                conn.execute("INSERT INTO users (user_id) VALUES (%s)", (user,))
        secret = new_secret()
        env = {
            "DATABASE_URL": dsn,
            "REDIS_URL": redis_server.url,
            "CRICALGO_WEBHOOK_SECRET": secret,
            "CRICALGO_QUEUE": "bench",
            "CRICALGO_LOG_LEVEL": "INFO",
            "DB_POOL_SIZE": "10",
            "DB_MAX_OVERFLOW": "10",
            "CRICALGO_RELAY_AFTER_SECONDS": "600",
        }
        settings = Settings.from_env(env)
        services = [
            pid
            for pid in (redis_server.process and redis_server.process.pid,
                        postgres.process and postgres.process.pid)
            if pid
        ]  # fmt: skip

        bare_port, hook_port = free_port(), free_port()
        bare = start(
            [sys.executable, str(HERE / "bare_app.py"), str(bare_port)], {}, scratch / "bare.log"
        )
        processes.append(bare)
        hook = start(
            [sys.executable, "-m", "cricalgo_workload", "webhook"],
            {**env, "CRICALGO_PORT": str(hook_port)},
            scratch / "webhook.log",
        )
        processes.append(hook)
        bare_url, hook_url = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{hook_port}"
        wait_http(bare_url)
        wait_http(hook_url + "/healthz")

        # (a) and (b) alternate, round after round, and each keeps its median run: the
        # machine is shared, so a single run of each would mostly measure the neighbours.
        targets = (
            ("(a) bare Starlette 202", bare_url, bare.pid),
            ("(b) durable webhook", hook_url, hook.pid),
        )
        fixed: dict[str, list[dict[str, float]]] = {t: [] for t, _, _ in targets}
        saturated: dict[str, list[dict[str, float]]] = {t: [] for t, _, _ in targets}
        for _ in range(args.rounds):
            for target, url, pid in targets:
                # Signed now: deliveries older than the 300 s tolerance would be refused.
                _, jsonl = write_deliveries(secret, args.rate * args.seconds, scratch, "fixed")
                fixed[target].append(
                    measured(
                        functools.partial(fixed_rate, url, jsonl, args.rate, args.seconds),
                        pid,
                        services,
                    )
                )
        for _ in range(args.rounds):
            for target, url, pid in targets:
                lua, _ = write_deliveries(secret, 3000 * args.seconds, scratch, "sat")
                saturated[target].append(
                    measured(
                        functools.partial(wrk, url, lua, args.seconds, args.connections),
                        pid,
                        services,
                    )
                )
        # Crediting latency, webhook and one worker process together.
        _, jsonl = write_deliveries(
            secret, args.latency_rate * args.latency_seconds, scratch, "latency"
        )
        latency = crediting_latency(
            hook_url, jsonl, env, dsn, args.latency_rate, args.latency_seconds, scratch
        )
        stop(hook)
        stop(bare)

        worker_env = {**env, "CRICALGO_LOG_LEVEL": "INFO", "CRICALGO_WORKER_THREADS": "8"}
        credit = {
            int(n): credit_rate(settings, worker_env, int(n), args.drain, scratch)
            for n in args.workers.split(",")
        }
    finally:
        for p in processes:
            if p.poll() is None:
                stop(p)
        postgres.remove_data()
        redis_server.stop()
        for path in _created:
            shutil.rmtree(path, ignore_errors=True)
    load_end = os.getloadavg()

    rows = [(t, f"fixed {args.rate}/s", median_run(fixed[t], "p99_ms")) for t, _, _ in targets]
    rows += [
        (t, f"saturation c={args.connections}", median_run(saturated[t], "rps"))
        for t, _, _ in targets
    ]
    print(
        f"\nCricAlgo workload benchmark — {os.cpu_count()} CPUs, {args.seconds}s per run,"
        f" {args.rounds} rounds, medians; load average"
        f" {load_start[0]:.2f}/{load_start[1]:.2f} at start, {load_end[0]:.2f}/{load_end[1]:.2f}"
        " at end (1/5 min)\n"
    )
    columns = ["req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "srv µs/r", "pg+rd µs/r"]
    print(f"| {'target':<24} | {'load':<18} | " + " | ".join(f"{c:>8}" for c in columns) + " |")
    print(f"|{'-' * 26}|{'-' * 20}|" + "|".join("-" * 10 for _ in columns) + "|")
    for target, load, r in rows:
        errors = r.get("errors", r.get("non_202", 0))
        print(
            f"| {target:<24} | {load:<18} | {r['rps']:>8.0f} | {r['p50_ms']:>8.2f} |"
            f" {r['p95_ms']:>8.2f} | {r['p99_ms']:>8.2f} | {errors:>8.0f} |"
            f" {r['server_us']:>8.0f} | {r['services_us']:>10.0f} |"
        )
    (a_name, _, _), (b_name, _, _) = targets
    ratios = [
        b["rps"] / a["rps"] for a, b in zip(saturated[a_name], saturated[b_name], strict=True)
    ]
    print(f"\nratio b/a at saturation, per round: {spread(ratios, '.2f')}")
    cpu_ratios = [
        a["server_us"] / b["server_us"]
        for a, b in zip(saturated[a_name], saturated[b_name], strict=True)
    ]
    print(f"server CPU per request a/b at saturation, per round: {spread(cpu_ratios, '.2f')}")
    for target, _, _ in targets:
        p99s = [r["p99_ms"] for r in fixed[target]]
        print(f"{target} p99 ms at {args.rate}/s, per round: {spread(p99s, '.1f')}")
    print(
        "load average (1 min) after each saturation run, a b a b ...: "
        + " ".join(f"{saturated[t][i]['load']:.1f}" for i in range(args.rounds) for t in saturated)
    )
    for n, rate in credit.items():
        print(f"(c) deposits credited end to end, {n} worker process(es) x 8 threads: {rate:.0f}/s")
    accepted = median_run(saturated[b_name], "rps")["rps"]
    first = credit[min(credit)]
    print(f"(c) credited/s per process (1 process) / (b) accepted/s: {first / accepted:.2f}")
    if len(credit) > 1:
        print(f"(c) {max(credit)} processes / 1 process: {credit[max(credit)] / first:.2f}")
    print(
        f"(d) crediting latency, 202 to ledger row, {args.latency_rate}/s for"
        f" {args.latency_seconds}s, 1 worker process: p50 {latency['p50_ms']:.0f} ms,"
        f" p99 {latency['p99_ms']:.0f} ms ({latency['credited']:.0f} credited,"
        f" sent at {latency['rps']:.0f}/s)"
    )


if __name__ == "__main__":
    main()
