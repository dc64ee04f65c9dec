"""Redis, PostgreSQL and nginx from Debian's packages, and Prometheus built from the Go
module proxy, each as a process of its own on a free loopback port, with a readiness
check and a clean stop.

Each server object keeps its port across `stop()`/`start()`, so fault tests can take a
server away and bring it back where clients expect it.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .binaries import ensure_prometheus
from .processes import ManagedProcess, StartupError, free_port, pid_alive


def _find_binary(name: str, *extra_globs: str) -> str:
    for pattern in extra_globs:
        matches = sorted(glob.glob(pattern))
        if matches:
            return matches[-1]
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if found is None:
        raise StartupError(f"{name} is not installed; run `make system-packages` (Debian packages)")
    return found


def _http_ok(
    url: str, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None
) -> bool:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=2, context=context) as response:
        return bool(response.status == 200)


@dataclass
class RedisServer:
    """redis-server without persistence: a restart loses every key, like a crashed pod."""

    work_dir: Path
    port: int = field(default_factory=free_port)
    # Another address to listen on besides loopback (a real node's, for its pods).
    host: str = "127.0.0.1"
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "redis",
            [
                _find_binary("redis-server"),
                "--bind",
                *dict.fromkeys(("127.0.0.1", self.host)),
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.work_dir),
                "--protected-mode",
                "no",
            ],
            self.work_dir / "redis.log",
        )
        self.process.start()
        self.process.wait_ready(self._ping, 30)

    def stop(self) -> None:
        if self.process:
            self.process.stop()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _postgres_bin(name: str) -> str:
    return _find_binary(name, f"/usr/lib/postgresql/*/bin/{name}")


def _others_can_enter(path: Path) -> bool:
    """Whether every existing directory on the way to `path` is searchable by any user."""
    for directory in [path, *path.parents]:
        if directory.exists() and not directory.stat().st_mode & stat.S_IXOTH:
            return False
    return True


@dataclass
class PostgresServer:
    """A PostgreSQL cluster initialised in a temporary directory, trust auth on loopback."""

    work_dir: Path
    port: int = field(default_factory=free_port)
    # Another address to listen on besides loopback, and the network whose clients it
    # trusts there (a real node's address and its pods' CIDR).
    host: str = "127.0.0.1"
    trusted_cidr: str | None = None
    process: ManagedProcess | None = field(default=None, init=False)
    _pg_dir: Path | None = field(default=None, init=False)

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    @property
    def _user(self) -> str | None:
        # PostgreSQL refuses to run as root; Debian's package creates the postgres user.
        return "postgres" if os.geteuid() == 0 else None

    def _run_dir(self) -> Path:
        """Data directory and socket live where the server's own user can reach them.

        Run by root, the server runs as `postgres`, which cannot enter a directory under
        /root (where `cricalgo dev up` keeps its state), so they go to a temporary
        directory it owns; the log stays in `work_dir`.
        """
        if self._pg_dir is None:
            if self._user is None or _others_can_enter(self.work_dir):
                self._pg_dir = self.work_dir
            else:
                self._pg_dir = Path(tempfile.mkdtemp(prefix="cricalgo-pgdata-"))
            self._pg_dir.mkdir(parents=True, exist_ok=True)
            if self._user is not None:
                entry = pwd.getpwnam(self._user)
                os.chown(self._pg_dir, entry.pw_uid, entry.pw_gid)
        return self._pg_dir

    def _data_dir(self) -> Path:
        return self._run_dir() / "data"

    def _initdb(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [
                _postgres_bin("initdb"),
                "-D",
                str(self._data_dir()),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            user=self._user,
            check=False,
        )
        if proc.returncode != 0:
            raise StartupError(f"initdb failed:\n{proc.stdout}\n{proc.stderr}")
        trusted = [f"{self.host}/32"] if self.host != "127.0.0.1" else []
        trusted += [self.trusted_cidr] if self.trusted_cidr else []
        with (self._data_dir() / "pg_hba.conf").open("a") as hba:
            hba.writelines(f"host all all {cidr} trust\n" for cidr in trusted)

    def _accepts(self) -> bool:
        proc = subprocess.run(
            [_postgres_bin("pg_isready"), "-h", self.host, "-p", str(self.port), "-q"],
            check=False,
        )
        return proc.returncode == 0

    def start(self) -> None:
        if not (self._data_dir() / "PG_VERSION").exists():
            self._initdb()
        self.process = ManagedProcess(
            "postgres",
            [
                _postgres_bin("postgres"),
                "-D",
                str(self._data_dir()),
                "-p",
                str(self.port),
                "-c",
                f"listen_addresses={','.join(dict.fromkeys(('127.0.0.1', self.host)))}",
                "-c",
                f"unix_socket_directories={self._run_dir()}",
                "-c",
                "max_connections=200",
                # Test data is disposable: skip fsync for speed, never for durability tests
                # of PostgreSQL itself (we test our use of it, not its storage).
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            self.work_dir / "postgres.log",
            user=self._user,
            # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients.
            stop_signal=signal.SIGINT,
        )
        self.process.start()
        self.process.wait_ready(self._accepts, 60)

    def scratch_dirs(self) -> list[Path]:
        """Directories this server keeps outside `work_dir`."""
        return [self._pg_dir] if self._pg_dir not in (None, self.work_dir) else []

    def remove_data(self) -> None:
        """Stop the server and delete its data directory (end of a session)."""
        self.stop()
        if self._pg_dir is not None and self._pg_dir != self.work_dir:
            shutil.rmtree(self._pg_dir, ignore_errors=True)
        self._pg_dir = None

    def create_database(self, name: str) -> str:
        """Create an empty database (dropping one of that name) and return its DSN."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def stop(self) -> None:
        if self.process:
            self.process.stop()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class PrometheusServer:
    """Prometheus with a generated config: file-based targets, 1 s scrapes, and (when a
    cluster is given) Kubernetes pod discovery against the local API server.

    The binary is Prometheus 3 built from the Go module proxy (see binaries.py): Debian's
    package is built without `kubernetes_sd_configs`."""

    work_dir: Path
    port: int = field(default_factory=free_port)
    scrape_interval: str = "1s"
    kubernetes: dict[str, str] | None = None
    # Built from the Go module proxy by default: Debian's build lacks Kubernetes discovery.
    binary: str | None = None
    # The contents of --web.config.file (TLS, basic-auth users); the readiness check then
    # connects with `ready_context` and sends `ready_headers`.
    web_config: dict[str, object] | None = None
    ready_context: ssl.SSLContext | None = None
    ready_headers: dict[str, str] = field(default_factory=dict)
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        tls = bool(self.web_config and "tls_server_config" in self.web_config)
        return f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def targets_dir(self) -> Path:
        return self.work_dir / "targets"

    def render_config(self) -> dict[str, object]:
        """The prometheus.yml this server runs with."""
        scrape_configs: list[dict[str, object]] = [
            {
                # The `job` label of each target group names its job (see set_targets).
                "job_name": "file",
                "file_sd_configs": [
                    {"files": [str(self.targets_dir / "*.json")], "refresh_interval": "1s"}
                ],
            }
        ]
        if self.kubernetes:
            scrape_configs.append(render_pod_discovery(**self.kubernetes))
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": scrape_configs,
        }

    def set_targets(
        self, job: str, targets: list[str], labels: dict[str, str] | None = None
    ) -> None:
        """Scrape `targets` (host:port) as job `job` with extra `labels`."""
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        group = {"targets": targets, "labels": {**(labels or {}), "job": job}}
        tmp = self.targets_dir / f".{job}.json.tmp"
        tmp.write_text(json.dumps([group]))
        tmp.rename(self.targets_dir / f"{job}.json")

    def start(self) -> None:
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.render_config(), sort_keys=False))
        args = [
            self.binary or str(ensure_prometheus()),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=2h",
            "--log.level=warn",
        ]
        if self.web_config is not None:
            web = self.work_dir / "web.yml"
            web.write_text(yaml.safe_dump(self.web_config, sort_keys=False))
            args.append(f"--web.config.file={web}")
        self.process = ManagedProcess("prometheus", args, self.work_dir / "prometheus.log")
        self.process.start()
        ready = f"{self.url}/-/ready"
        self.process.wait_ready(lambda: _http_ok(ready, self.ready_context, self.ready_headers), 60)

    def stop(self) -> None:
        if self.process:
            self.process.stop()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def render_pod_discovery(
    server: str, ca_file: str, cert_file: str, key_file: str
) -> dict[str, object]:
    """A scrape job that discovers pods through the API server, as on a real cluster.

    Pods opt in with the usual `prometheus.io/scrape` / `prometheus.io/port` annotations;
    the pod labels `track`, `version` and `app.kubernetes.io/*` become series labels.
    """
    return {
        "job_name": "kubernetes-pods",
        # Workload series carry their own `track`/`version` (equal to the pod labels) and the
        # operator's carry the CR's `namespace`: the scraped labels win, as on a cluster
        # where the ServiceMonitor sets honorLabels.
        "honor_labels": True,
        "kubernetes_sd_configs": [
            {
                "role": "pod",
                "api_server": server,
                "tls_config": {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file},
            }
        ],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                "action": "keep",
                "regex": "true",
            },
            {
                "source_labels": [
                    "__address__",
                    "__meta_kubernetes_pod_annotation_prometheus_io_port",
                ],
                "action": "replace",
                "regex": r"([^:]+)(?::\d+)?;(\d+)",
                "replacement": "$1:$2",
                "target_label": "__address__",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_label_track"], "target_label": "track"},
            {"source_labels": ["__meta_kubernetes_pod_label_version"], "target_label": "version"},
            {
                "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
                "target_label": "app",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                "target_label": "component",
            },
        ],
    }


_NGINX_MAIN = """\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{status_port};
        location = /healthz {{ return 200 "ok\\n"; }}
    }}
    include {prefix}/http.conf;
}}
"""


def _children(pid: int) -> set[int]:
    children = set()
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            children.add(int(stat_file.parent.name))
    return children


def _accepting(pid: int) -> bool:
    """Whether an nginx worker still takes new connections (not gone, not retiring: a
    retiring worker renames itself "worker process is shutting down" as it closes its
    listening sockets, then finishes the requests it holds)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return bool(title) and b"shutting down" not in title and pid_alive(pid)


def reload_nginx(master_pid: int, timeout: float = 10.0) -> None:
    """SIGHUP nginx and wait until no worker of the old config accepts connections.

    Until then an old worker can still accept a connection and answer it with the old
    config; callers (tests, the mesh) expect the new one once this returns. Old workers
    finishing requests in flight do not hold it up: they complete them on their own.
    """
    old = _children(master_pid)
    os.kill(master_pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = _children(master_pid)
        if current - old and not any(_accepting(pid) for pid in current & old):
            return
        time.sleep(0.02)


@dataclass
class NginxServer:
    """nginx on an unprivileged port; callers supply the body of its http block."""

    work_dir: Path
    port: int = field(default_factory=free_port)
    status_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _main_conf(self) -> Path:
        return self.work_dir / "nginx.conf"

    def _default_http(self) -> str:
        return (
            f"server {{ listen 127.0.0.1:{self.port};\n"
            '  location / { return 404 "no route configured\\n"; }\n}\n'
        )

    def _nginx(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_find_binary("nginx"), "-p", str(self.work_dir), "-c", str(self._main_conf()), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def start(self) -> None:
        (self.work_dir / "tmp").mkdir(parents=True, exist_ok=True)
        self._main_conf().write_text(
            _NGINX_MAIN.format(prefix=self.work_dir, status_port=self.status_port)
        )
        http_conf = self.work_dir / "http.conf"
        if not http_conf.exists():
            http_conf.write_text(self._default_http())
        self.process = ManagedProcess(
            "nginx",
            [_find_binary("nginx"), "-p", str(self.work_dir), "-c", str(self._main_conf())],
            self.work_dir / "nginx.out",
            # SIGQUIT is nginx's graceful stop.
            stop_signal=signal.SIGQUIT,
        )
        self.process.start()
        self.process.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{self.status_port}/healthz"))

    def apply_http_config(self, text: str) -> None:
        """Replace the http-block contents, validate with `nginx -t`, then reload.

        A config nginx rejects raises ValueError and leaves the running one untouched.
        """
        http_conf = self.work_dir / "http.conf"
        previous = http_conf.read_text() if http_conf.exists() else self._default_http()
        http_conf.write_text(text)
        check = self._nginx("-t")
        if check.returncode != 0:
            http_conf.write_text(previous)
            raise ValueError(f"nginx rejected the config:\n{check.stderr.strip()}")
        if self.process is not None and self.process.pid is not None:
            reload_nginx(self.process.pid)

    def stop(self) -> None:
        if self.process:
            self.process.stop()
            self.process = None


def new_work_dir(prefix: str) -> Path:
    """A fresh temporary directory for one server (readable by the postgres user)."""
    path = Path(tempfile.mkdtemp(prefix=f"cricalgo-{prefix}-"))
    path.chmod(0o755)
    return path
