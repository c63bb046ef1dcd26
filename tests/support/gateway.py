"""nginx on loopback with a copy of deploy/gateway's config in front of replicas on loopback ports: the
gateway tests' and the cluster test's."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import free_port
from tests.support.servers import running_command

GATEWAY = Path(__file__).resolve().parents[2] / "deploy" / "gateway"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def gateway_copy(folder: Path, replicas: list[int], listen: int, edit: Callable[[str], str] = lambda s: s) -> Path:
    """The shipped config in `folder`, its replicas and listen address replaced by loopback ones."""
    config = (GATEWAY / "nginx.conf").read_text()
    assert len(re.findall(r"^\s*listen 8080;$", config, flags=re.M)) == 1
    config = config.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    (folder / "nginx.conf").write_text(edit(config))
    shipped = (GATEWAY / "replicas.conf").read_text()
    servers = [line.split()[1] for line in shipped.splitlines() if line.startswith("server ")]
    assert servers, "replicas.conf lists no server"
    (folder / "replicas.conf").write_text(
        "".join(f"server 127.0.0.1:{port} max_fails=3 fail_timeout=10s;\n" for port in replicas)
    )
    return folder / "nginx.conf"


def nginx_test(config: Path) -> subprocess.CompletedProcess[str]:
    # -e: the error log before the config is read; -g: a pid file of the test's own.
    pid = config.parent / "nginx.pid"
    command = [str(NGINX), "-t", "-p", str(config.parent), "-e", "stderr", "-c", str(config), "-g", f"pid {pid};"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@contextmanager
def gateway_running(folder: Path, ports: list[int], edit: Callable[[str], str] = lambda s: s) -> Iterator[str]:
    """nginx on a copy of the shipped config in front of the replicas at `ports`; yields its URL once it answers
    its health check, and stops it gracefully (SIGQUIT) on exit."""
    port = free_port()
    config = gateway_copy(folder, ports, port, edit)
    pid = folder / "nginx.pid"
    command = [str(NGINX), "-p", str(folder), "-e", "stderr", "-c", str(config), "-g", f"pid {pid}; daemon off;"]
    url = f"http://127.0.0.1:{port}"
    with running_command(
        command, url, "/gateway/healthz", folder / "nginx.log", timeout=30, stop_signal=signal.SIGQUIT
    ) as nginx:
        yield nginx.url
