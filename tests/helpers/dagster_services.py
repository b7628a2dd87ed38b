"""Start the real dagster-webserver (and dagster-daemon) on 127.0.0.1 for end-to-end tests; always stop them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pipelines.instance import prepare_instance

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        # The webserver and daemon spawn code-server children: stop the whole process group.
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
        except ProcessLookupError:
            pass


def wait_for_http(url: str, timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s:\n{log.read_text()[-3000:]}")


@contextmanager
def dagster_services(env: dict[str, str], logs: Path, daemon: bool = True,
                    workspace: str = "workspace.yaml") -> Iterator[int]:
    """Webserver (+ daemon) over a workspace file of the repository with the given environment; yields the
    webserver port.

    The instance storage is created here first, so the two processes never race to create it.
    """
    prepare_instance(env["DAGSTER_HOME"])
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        web_log = logs / "webserver.log"
        web = stack.enter_context(
            _process(
                [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)],
                env, web_log,
            )
        )
        if daemon:
            stack.enter_context(_process([str(BIN / "dagster-daemon"), "run", "-w", workspace], env,
                                         logs / "daemon.log"))
        wait_for_http(f"http://127.0.0.1:{port}/server_info", 180, web, web_log)
        yield port



def start_sensor(env: dict[str, str], name: str) -> subprocess.Popen:
    """`dagster sensor start NAME` in the background: it loads the code location (tens of seconds on two busy
    cores), which a test can overlap with other work before it waits for the process."""
    prepare_instance(env["DAGSTER_HOME"])
    return subprocess.Popen([str(BIN / "dagster"), "sensor", "start", name, "-w", "workspace.yaml"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextmanager
def dagster_daemon(env: dict[str, str], logs: Path) -> Iterator[subprocess.Popen]:
    """dagster-daemon alone over workspace.yaml (sensors, schedules, run launches): no webserver where a test
    needs none."""
    prepare_instance(env["DAGSTER_HOME"])
    logs.mkdir(parents=True, exist_ok=True)
    with _process([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, logs / "daemon.log") as proc:
        yield proc


@contextmanager
def code_server(module: str, port: int, env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen]:
    """`dagster code-server start -m module` on 127.0.0.1:port, started in its own folder; yields the process once
    it answers gRPC health checks."""
    from dagster._grpc.client import DagsterGrpcClient

    args = [str(BIN / "dagster"), "code-server", "start", "-m", module, "-h", "127.0.0.1", "-p", str(port)]
    with _process(args, env, log, cwd=cwd) as proc:
        client, deadline = DagsterGrpcClient(port=port, host="127.0.0.1"), time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"code server {module} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if client.health_check_query() == "SERVING":
                    break
            except Exception:  # not listening yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"code server {module} did not serve within 180s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield proc
