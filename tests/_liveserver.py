"""A real uvicorn server on a free loopback port, in a thread (shared by the issue-8 tests)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_settings(model_path: str, codec_path: str, **overrides: Any) -> Any:
    """Settings serving the tiny checkpoint on CPU with the native engine (no env)."""
    from kanitts.config import load_settings

    cli = {
        "languages": {"en": {"model": model_path}},
        "default_language": "en",
        "multi_language": False,
        "codec": {"model": codec_path},
        "engine": {"backend": "native", "device": "cpu", "warmup": False},
    }
    return load_settings(cli=_merge(cli, overrides), env=False)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_cli(*args: str) -> tuple[Any, str]:
    """Start ``kanitts serve ARGS --port P`` as a user would; returns (process, base URL)
    once it reports ready (raises if it does not within 90 s)."""
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kanitts.cli", "serve", *args, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=1).json().get("tts_ready"):
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("kanitts serve did not become ready:\n" + (proc.communicate()[0] or ""))


class LiveServer:
    """``with LiveServer(app) as srv: httpx.get(srv.url + "/health")``; waits for /ready."""

    def __init__(self, app: Any, ready_timeout: float = 120.0) -> None:
        self.app = app
        self.ready_timeout = ready_timeout
        self.url = ""

    def __enter__(self) -> "LiveServer":
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                if httpx.get(self.url + "/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server never became ready")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)
