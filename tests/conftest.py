"""Shared fixtures: tiny random-weight checkpoints in the real formats, built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from kanitts.tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny-en")
    make_tiny(out, language="en")
    return out


@pytest.fixture(scope="session")
def tiny_es_dir(tmp_path_factory) -> Path:
    from kanitts.tiny import make_model

    out = tmp_path_factory.mktemp("tiny-es")
    make_model(out / "model", speakers=["nova", "ballad", "ash"], language="es", seed=1)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_dir) -> str:
    return str(tiny_dir / "model")


@pytest.fixture(scope="session")
def tiny_codec(tiny_dir) -> str:
    return str(tiny_dir / "codec.nemo")


def tiny_settings(model: str, codec: str, **overrides):
    """Settings serving one tiny model on CPU with the PyTorch backend."""
    from kanitts.config import load_settings

    cli = {
        "multi_language": False,
        "default_language": "en",
        "languages": {"en": {"model": model}},
        "codec": {"model": codec},
        "engine": {"backend": "torch", "device": "cpu"},
        "server": {"host": "127.0.0.1", "port": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cli.get(key), dict):
            cli[key] = {**cli[key], **value}
        else:
            cli[key] = value
    return load_settings(None, cli, env=False)


class LiveServer:
    """uvicorn on a free loopback port in a background thread."""

    def __init__(self, settings):
        import socket
        import threading

        import uvicorn

        from kanitts.server.app import create_app

        self.app = create_app(settings)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                           timeout_graceful_shutdown=2)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import time

        import httpx

        self.thread.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).json().get("tts_ready"):
                    return self
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(15)

    @property
    def service(self):
        return self.app.state.service


@pytest.fixture(scope="module")
def live_server(tiny_model, tiny_codec):
    with LiveServer(tiny_settings(tiny_model, tiny_codec)) as srv:
        yield srv
