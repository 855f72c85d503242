"""Helpers for tests that run several Ray nodes on this one machine, and clean up only what they started.

Two `ray start` nodes on one machine share its IP, so every port they would otherwise take by
default (worker ports, dashboard agent, client server) is given explicitly and kept apart. Each test
cluster lives in its own short temp dir (unix socket paths must stay under 108 bytes), so nothing
else on the machine attaches to it by accident, and teardown stops only the processes it started:
never `ray stop`, which would also stop other people's clusters on a shared machine.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sys
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")


def free_ports(n: int) -> list[int]:
    """`n` distinct ports that are free right now (all bound at once, so no duplicates)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def worker_port_range(size: int = 100) -> tuple[int, int]:
    """A free block of ports for one node's workers, below the kernel's ephemeral range (32768+)
    and above Ray's default worker range (10002-19999) that local clusters of other tests use."""
    for _ in range(50):
        low = random.randrange(20000, 32000 - size, size)
        if all(_is_free(p) for p in range(low, low + size)):
            return low, low + size - 1
    raise RuntimeError("no free block of worker ports in 20000-32000")


def node_args(temp_dir: Path, num_cpus: int, resources: str, head: bool) -> list[str]:
    """`ray start` arguments that keep this node's ports and files apart from every other node here."""
    ports = free_ports(7)
    low, high = worker_port_range()
    args = [f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus}", f"--resources={resources}",
            f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
            f"--min-worker-port={low}", f"--max-worker-port={high}",
            f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
            f"--runtime-env-agent-port={ports[4]}", f"--metrics-export-port={ports[5]}",
            "--object-store-memory=100000000", "--disable-usage-stats"]
    if head:
        args += ["--include-dashboard=false", f"--ray-client-server-port={ports[6]}"]
    return args


def ray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for our Ray nodes and drivers: the venv first on PATH, token auth off on all of them
    (a head turns it on when ~/.ray/auth_token exists but a joining node does not), no inherited cluster."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '')}", RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def wait_for_port(port: int, timeout_s: float, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, parents first."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(tree.get(p, []))
    return out


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line contains `text` (our unique temp dir)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [p for p in found if p != os.getpid()]


def _alive(pid: int) -> bool:
    """Running (a zombie, finished but not yet reaped by its parent, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _is_ray_internal(pid: int) -> bool:
    """A process Ray started itself (gcs_server, raylet, agents, `ray::` workers): its `ray start` stops it."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"site-packages/ray/" in cmdline or cmdline.startswith(b"ray::")


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_processes(roots: list[int], temp_dir: Path, grace_s: float = 30.0) -> None:
    """Stop the trees under `roots` plus anything naming `temp_dir`, and nothing else on the machine.

    SIGTERM goes to our own processes and to `ray start --block`, which then drains and stops the Ray
    processes it started (signalling those directly makes the drain wait for a dying GCS); whatever
    is still running after `grace_s` is killed."""
    pids: list[int] = []
    for root in roots:
        pids += [p for p in descendants(root) if p not in pids]
    pids += [p for p in processes_mentioning(str(temp_dir)) if p not in pids]
    _signal([p for p in pids if not _is_ray_internal(p)], signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.5)
    _signal([p for p in pids if _alive(p)], signal.SIGKILL)
