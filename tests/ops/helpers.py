"""Helpers for the operational tests: small photos, file trees, local servers in their own
process groups (killed as a group at teardown), the venv's tools and an offline environment."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
from PIL import Image

from hggt.photos import builtin_photos

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: dvc, prefect, mlflow live beside python

# DESIGN §8: nothing phones home from a subprocess either.
OFFLINE = {
    "DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def tool_env(**extra: str) -> dict[str, str]:
    """The current environment, offline, with the venv's bin first on PATH (dvc.yaml's
    ``python`` must be this interpreter)."""
    env = {**os.environ, **OFFLINE, **extra}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def small_photos(folder: Path, n: int = 3, size: tuple[int, int] = (288, 256)) -> Path:
    """Write the top-left ``size`` (w, h) crop of the first ``n`` bundled photos as PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    for source, path in builtin_photos()[:n]:
        with Image.open(path) as img:
            img.convert("RGB").crop((0, 0, *size)).save(folder / f"{Path(source).stem}.png")
    return folder


def tree(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (a file: itself)."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {
        (p.relative_to(root).as_posix() if p != root else p.name): hashlib.sha256(
            p.read_bytes()
        ).hexdigest()
        for p in files
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the whole process group of ``proc`` (started with ``start_new_session``)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class Server:
    """A local server in its own session: ``start()``, ``wait()`` until ``ready_url`` answers
    200, ``stop()`` kills its whole process group (workers included)."""

    def __init__(
        self, cmd: Sequence[str], ready_url: str, env: Mapping[str, str], log: Path
    ) -> None:
        self.cmd, self.ready_url, self.env, self.log = list(cmd), ready_url, dict(env), log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    def wait(self, timeout: float = 120.0) -> Server:
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.cmd[0]} exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            try:
                if httpx.get(self.ready_url, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.ready_url} not up after {timeout} s:\n{self.log.read_text()}"
                )
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc is None:
            return
        kill_group(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        kill_group(self.proc, signal.SIGKILL)  # whatever outlived the leader
        self.proc.wait(timeout=10)


@contextmanager
def servers(*started: Server, timeout: float = 120.0) -> Iterator[None]:
    """Wait for servers already started (they boot in parallel); stop them all afterwards."""
    try:
        for s in started:
            s.wait(timeout)
        yield
    finally:
        for s in started:
            s.stop()
