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


from _liveserver import LiveServer as _AppServer  # noqa: E402
from _liveserver import tiny_settings  # noqa: E402,F401  (re-exported for the tests)


class LiveServer(_AppServer):
    """A live server for ``settings``: ``create_app(settings)`` on a free loopback port."""

    def __init__(self, settings):
        from kanitts.server.app import create_app

        super().__init__(create_app(settings))

    @property
    def service(self):
        return self.app.state.service


@pytest.fixture(scope="module")
def live_server(tiny_model, tiny_codec):
    with LiveServer(tiny_settings(tiny_model, tiny_codec)) as srv:
        yield srv
