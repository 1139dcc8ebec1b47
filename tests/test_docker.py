"""Builds the CPU image when a docker engine and its base image are already here (never pulls)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = "python:3.12-slim"


def _ok(*cmd: str) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_compose_file_wires_open_webui():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    webui = compose["services"]["open-webui"]["environment"]
    assert webui["AUDIO_TTS_ENGINE"] == "openai"
    assert webui["AUDIO_TTS_OPENAI_API_BASE_URL"] == "http://kanitts:32855/v1"
    assert webui["AUDIO_TTS_MODEL"] == "tts-1" and webui["AUDIO_TTS_VOICE"] == "andrew"
    assert "AUDIO_TTS_OPENAI_API_KEY" in webui
    gpu = compose["services"]["kanitts"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    for name in ("Dockerfile", "Dockerfile.cpu"):
        text = (ROOT / name).read_text()
        assert "USER kanitts" in text and "HEALTHCHECK" in text and "EXPOSE 32855" in text
        assert "/home/kanitts/.cache/huggingface" in text


@pytest.mark.slow
def test_build_cpu_image():
    if not shutil.which("docker") or not _ok("docker", "info"):
        pytest.skip("no docker engine")
    if not _ok("docker", "image", "inspect", BASE):
        pytest.skip(f"base image {BASE} is not present locally (this test never pulls)")
    r = subprocess.run(
        ["docker", "build", "--pull=false", "-f", "Dockerfile.cpu", "-t", "kanitts-vllm:cpu-test", "."],
        cwd=ROOT, capture_output=True, text=True, timeout=3600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
