"""`make bench-workload`: the durable webhook against a bare Starlette ceiling, and the
worker's end-to-end credit rate, on this machine, in one run. Not a test: prints a table.

(a) ceiling: bare Starlette handler answering 202, same uvicorn settings;
(b) durable webhook: verify + validate + INSERT (committed) + 202 + enqueue to Redis;
(c) deposits credited per second with N worker processes, from a queue filled beforehand.
Load comes from separate processes: wrk (saturation) and an aiohttp open-loop generator
(fixed rate).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from cricalgo_localstack.processes import free_port
from cricalgo_localstack.services import PostgresServer, RedisServer
from cricalgo_workload.broker import close_broker, enqueue_credit
from cricalgo_workload.migrations import migrate
from cricalgo_workload.settings import Settings
from cricalgo_workload.testing import deposit_body, new_secret, signed_headers
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
            " 'r', '\\x'::bytea FROM generate_series(1, %s) g",
            (f"w{workers}-", count),
        )
        tx_ids = [
            str(r[0])
            for r in conn.execute(
                "SELECT tx_id FROM deposit_inbox WHERE event_id LIKE %s", (f"w{workers}-%",)
            )
        ]
    enqueuer = DepositWorker(settings)
    for tx_id in tx_ids:
        enqueue_credit(enqueuer.broker, settings, tx_id)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--drain", type=int, default=3000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    scratch = private_dir("run")
    redis_server = RedisServer(private_dir("redis"))
    postgres = PostgresServer(private_dir("postgres"))
    redis_server.start()
    postgres.start()
    processes: list[subprocess.Popen[bytes]] = []
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
        rows: list[tuple[str, str, dict[str, float]]] = []

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

        # Saturation alternates a and b for several rounds and keeps each one's median run:
        # this machine is shared, so a single run of each would mostly measure the neighbours.
        targets = (("(a) bare Starlette 202", bare_url), ("(b) durable webhook", hook_url))
        for target, url in targets:
            _, jsonl = write_deliveries(secret, args.rate * args.seconds, scratch, "fixed")
            rows.append(
                (target, f"fixed {args.rate}/s", fixed_rate(url, jsonl, args.rate, args.seconds))
            )
        runs: dict[str, list[dict[str, float]]] = {target: [] for target, _ in targets}
        for _ in range(args.rounds):
            for target, url in targets:
                lua, _ = write_deliveries(secret, 3000 * args.seconds, scratch, "sat")
                runs[target].append(wrk(url, lua, args.seconds, args.connections))
        for target, results in runs.items():
            median = sorted(results, key=lambda r: r["rps"])[len(results) // 2]
            rows.append((target, f"saturation c={args.connections}", median))
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

    print(f"\nCricAlgo workload benchmark — {os.cpu_count()} CPUs, {args.seconds}s per run\n")
    columns = ["req/s", "p50 ms", "p95 ms", "p99 ms", "errors"]
    print(f"| {'target':<24} | {'load':<18} | " + " | ".join(f"{c:>7}" for c in columns) + " |")
    print(f"|{'-' * 26}|{'-' * 20}|" + "|".join("-" * 9 for _ in columns) + "|")
    for target, load, r in rows:
        errors = r.get("errors", r.get("non_202", 0))
        print(
            f"| {target:<24} | {load:<18} | {r['rps']:>7.0f} | {r['p50_ms']:>7.2f} |"
            f" {r['p95_ms']:>7.2f} | {r['p99_ms']:>7.2f} | {errors:>7.0f} |"
        )
    sat = [r for _, load, r in rows if load.startswith("saturation")]
    print(f"\nratio b/a at saturation: {sat[1]['rps'] / sat[0]['rps']:.2f}")
    for n, rate in credit.items():
        print(f"(c) deposits credited end to end, {n} worker process(es) x 8 threads: {rate:.0f}/s")


if __name__ == "__main__":
    main()
