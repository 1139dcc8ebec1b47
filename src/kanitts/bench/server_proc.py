"""``kanitts serve`` as a subprocess for the HTTP benchmark: start, wait until ready, stop."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

#: Lines of a server's output shown when it exits before it is ready.
TAIL_LINES = 20


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_subprocess(model: Path, codec: Path, mode: str, port: int, extra: Sequence[str] = (),
                     timeout: float = 400.0, log_path: str | None = None, env: dict[str, str] | None = None,
                     backend: str = "vllm") -> Iterator[str]:
    """Run ``kanitts serve`` (``extra``: more CLI flags, ``env``: more environment) and yield
    its base URL once /ready says so; terminated (killed after 30 s) on exit. Output goes to
    ``log_path`` (appended) or a temporary file. ``mode`` is passed as ``--mode``.
    Raises RuntimeError with the server's last output lines if it exits early, TimeoutError."""
    cmd = [sys.executable, "-m", "kanitts.cli", "serve", "--model", str(model), "--codec", str(codec),
           "--backend", backend, "--mode", mode, "--port", str(port), *extra]
    with contextlib.ExitStack() as stack:
        if log_path:
            log = stack.enter_context(open(log_path, "a+"))  # noqa: SIM115
        else:
            log = stack.enter_context(tempfile.TemporaryFile("w+"))
        start = log.tell()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            try:
                wait_ready(f"http://127.0.0.1:{port}", timeout, proc)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; its last output:\n{_tail(log, start)}") from None
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _tail(log: IO[str], start: int, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines written to ``log`` since offset ``start``."""
    log.flush()
    log.seek(start)
    return "\n".join(log.read().splitlines()[-lines:])


def wait_ready(base_url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``GET /ready`` (200 once every engine is warm) every second for ``timeout`` s."""
    import httpx

    t_end = time.time() + timeout
    while time.time() < t_end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            r = httpx.get(base_url + "/ready", timeout=2.0)
            if r.status_code == 200 and r.json().get("ready") is True:
                return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(1.0)
    raise TimeoutError(f"{base_url} not ready after {timeout:.0f}s")
