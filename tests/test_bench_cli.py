"""`kanitts bench` on a CPU install, through the command line (issue 17, point 3)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from kanitts.bench.levels import LEVELS, default_levels

KANITTS = [sys.executable, "-m", "kanitts.cli"]


def bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANITTS_")}
    return subprocess.run([*KANITTS, "bench", *args], capture_output=True, text=True,
                          env={**env, "HF_HUB_OFFLINE": "1"}, timeout=timeout)


def _lines(stdout: str, prefix: str) -> list[dict]:
    return [json.loads(line[len(prefix):]) for line in stdout.splitlines() if line.startswith(prefix)]


def test_levels_suit_the_backend():
    conc, rt = default_levels("native", False)
    assert rt == [] and max(conc) <= 4
    assert default_levels("unknown", True) == default_levels("native", True)  # a server that does not say
    assert max(default_levels("vllm", True)[1]) == max(LEVELS[("vllm", True)][1])


def test_url_builds_no_assets_and_reports_what_ran(live_server, tmp_path):
    assets = tmp_path / "assets"
    r = bench("--url", live_server.url, "--tokens", "8", "--assets", str(assets))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not assets.exists()
    steps = _lines(r.stdout, "BENCH ")
    levels = next(s for s in steps if s["msg"] == "http_levels")
    assert levels["backend"] == "native" and levels["levels"] == default_levels("native", False)[0]
    assert any(s["msg"] == "http_load_start" and "eta_s" in s for s in steps)
    (result,) = _lines(r.stdout, "RESULT ")
    assert result["backend"] == "native" and result["mode"] == "unknown"
    assert "error" not in result and set(result["loads"]) == {str(c) for c in levels["levels"]}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_a_failing_server_shows_its_last_lines(tiny_model, tiny_codec):
    r = bench("--model", tiny_model, "--codec", tiny_codec, "--backend", "vllm", "--tokens", "8")
    assert r.returncode == 1
    assert "kanitts bench: error: server exited with 1 before it was ready" in r.stderr
    assert "vLLM is not installed" in r.stderr
    (result,) = _lines(r.stdout, "RESULT ")
    assert result["backend"] == "vllm" and "error" in result


def test_url_with_no_server_and_an_unknown_mode_are_usage_errors(capsys):
    """Checked before any work: one line naming the flag, exit status 2."""
    from kanitts.bench.cli import main
    from kanitts.bench.server_proc import free_port

    for argv, flag in ((["--url", f"http://127.0.0.1:{free_port()}"], "--url"), (["--mode", "turbo"], "--mode")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert flag in capsys.readouterr().err
