"""A real load balancer in front of backends: Debian's nginx, started and stopped by its PID.

`Balancer(ports, workdir).start()` runs an nginx master (one worker) on a free loopback port,
spreading requests round-robin over the backends on `ports`. A backend that refuses the
connection is skipped for the request (`proxy_next_upstream error timeout`: nginx never resends
a request a backend has started to read, so a POST is retried only when no backend saw it) and
for the next two seconds. `set_backends` rewrites the upstream list and reloads nginx without
dropping a request: how an orchestrator takes an instance out before stopping it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from grader.toolkit import steps
from grader.toolkit.procs import (
    Backend,
    children,
    free_port,
    port_open,
    stop_group,
    wait_until,
)

HOW_TO_GET = (
    "the load balancer needs Debian's nginx: `sudo apt-get install nginx` (the grader starts "
    "its own on a free port; the packaged service may stay stopped: `sudo service nginx stop`)"
)

CONFIG = """\
# Written by the grader ({purpose}); nginx runs it from this folder.
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
daemon off;
{user}
events {{ worker_connections 1024; }}

http {{
    access_log off;
    client_body_temp_path {folder}/tmp/body;
    proxy_temp_path {folder}/tmp/proxy;
    fastcgi_temp_path {folder}/tmp/fastcgi;
    uwsgi_temp_path {folder}/tmp/uwsgi;
    scgi_temp_path {folder}/tmp/scgi;

    upstream backends {{
{servers}
        keepalive 16;
        # Below uvicorn's 5 s keep-alive: nginx never reuses a connection the backend is closing
        # (a POST sent on one at that instant fails, and nginx rightly does not resend it).
        keepalive_timeout 4s;
    }}

    server {{
        listen 127.0.0.1:{port};
        # The backend refuses bodies over 128 KiB itself (413 in JSON); let them through to it.
        client_max_body_size 1m;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 1s;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


class BalancerUnavailable(RuntimeError):
    """nginx is not installed, or did not start; the message says what to do."""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )


class Balancer:
    """nginx in front of the backends listening on `ports` (127.0.0.1 only)."""

    def __init__(
        self, ports: list[int], folder: Path, purpose: str = "a check", port: int = 0
    ) -> None:
        self.ports = list(ports)
        self.folder = folder
        self.purpose = purpose
        self.port = port  # 0: a free one, chosen at start
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.folder / "nginx.conf"

    def _write_config(self) -> None:
        servers = "\n".join(
            f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in self.ports
        )
        # As root nginx would run its worker as `nobody`, which cannot write this folder.
        user = "user root;" if os.geteuid() == 0 else ""
        self.config_path.write_text(
            CONFIG.format(
                purpose=self.purpose,
                folder=self.folder,
                user=user,
                servers=servers,
                port=self.port,
            ),
            encoding="utf-8",
        )

    def start(self, timeout: float = 10) -> Balancer:
        binary = nginx_binary()
        if binary is None:
            raise BalancerUnavailable(HOW_TO_GET)
        (self.folder / "tmp").mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self._write_config()
        log = open(self.folder / "nginx.out", "wb")  # noqa: SIM115 (nginx keeps it)
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.folder), "-c", str(self.config_path), "-e", "stderr"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        if not wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, timeout):
            self.stop()
            raise BalancerUnavailable(f"nginx did not listen on port {self.port} in {timeout} s")
        if self.proc.poll() is not None:
            raise BalancerUnavailable(f"nginx stopped at once: {self.error_log()}")
        steps.record(f"started nginx on port {self.port} in front of ports {self.ports}")
        return self

    def set_backends(self, ports: list[int]) -> None:
        """Route to `ports` from now on: new config, `nginx -s reload` (SIGHUP), wait for it.

        Requests in flight finish on the old worker; new ones go to the new list.
        """
        assert self.proc is not None
        self.ports = list(ports)
        self._write_config()
        before = children(self.proc.pid)
        os.kill(self.proc.pid, signal.SIGHUP)
        # Done when the old workers are gone: each finishes its requests in flight first, and
        # until then it may still send one to a backend that is no longer listed (the reason
        # an orchestrator waits before it stops a backend it took out, as Kubernetes' preStop
        # sleep does).
        wait_until(lambda: (now := children(self.proc.pid)) and not now & before, timeout=10)
        steps.record(f"nginx now routes to ports {self.ports}")

    def error_log(self, last: int = 20) -> str:
        lines: list[str] = []
        for name in ("nginx.out", "error.log"):
            path = self.folder / name
            if path.exists():
                lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-last:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGQUIT is nginx's graceful stop; the group, so the worker goes too.
            stop_group(self.proc, signal.SIGQUIT, grace=5)
            self.proc.wait(timeout=5)
            steps.record("stopped nginx")
        self.proc = None

    def __enter__(self) -> Balancer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Front:
    """The balancer, seen as one backend by the chat client (`ChatApi(Front(...))`): requests go
    to nginx, and the cause of a 5xx is looked up in the log of every backend behind it."""

    name = "nginx"

    def __init__(self, balancer: Balancer, backends: list[Backend]) -> None:
        self.balancer = balancer
        self.backends = backends
        self._marks = [0] * len(backends)

    @property
    def url(self) -> str:
        return self.balancer.url

    @property
    def alive(self) -> bool:
        return self.balancer.proc is not None and self.balancer.proc.poll() is None

    def log_offset_now(self) -> int:
        self._marks = [b.log_offset_now() for b in self.backends]
        return 0

    def log_since(self, _offset: int, last: int = 40) -> str:
        logs = (b.log_since(m, last) for b, m in zip(self.backends, self._marks, strict=True))
        return "\n".join(log for log in logs if log)
