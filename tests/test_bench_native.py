"""``kanitts bench --backend native``: the HTTP bench starts a native-engine server (CPU,
tiny model) and its RESULT entry names the backend."""

from __future__ import annotations

import json

import pytest

from kanitts import bench
from kanitts.server.timeline import STAGES


def test_backend_choices_are_the_servers_and_engine_only_is_vllm_only():
    p = bench.build_parser()
    assert p.parse_args(["--backend", "native"]).backend == "native"
    with pytest.raises(SystemExit):
        p.parse_args(["--backend", "nope"])
    with pytest.raises(SystemExit):
        bench.main(["--engine-only", "--backend", "native"])


def test_http_bench_runs_a_native_server_and_records_the_backend(tiny_model, tiny_codec, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = bench.main(["--backend", "native", "--model", tiny_model, "--codec", tiny_codec, "--mode", "low_vram",
                     "--tokens", "24", "--concurrency", "2", "--realtime-levels", "", "--json", str(out),
                     "--server-log", str(tmp_path / "server.log")])
    entry = json.loads(out.read_text())[-1]
    assert rc == 0, (entry.get("error"), (tmp_path / "server.log").read_text()[-3000:])
    assert entry["backend"] == "native" and entry["path"] == "http"
    assert entry["single_stream_rtf"] > 0 and entry["loads"]["2"]["streams"] == 2
    assert entry["loads"]["2"]["errors"] == 0
    stages = entry["loads"]["2"]["ttfa_stages_ms"]  # read back from the server's request log
    assert stages["requests"] == 2, stages
    p50 = [stages[key]["p50"] for key in STAGES]
    assert all(isinstance(v, float) for v in p50) and p50 == sorted(p50), stages
    assert "RESULT" in capsys.readouterr().out
