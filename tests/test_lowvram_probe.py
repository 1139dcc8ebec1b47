"""scripts/lowvram_probe.py on the CPU (a smoke test of the GPU memory probe): one variant in
its own process on the tiny checkpoints; its row names every part, with null device figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ["context", "engine_weights", "engine_slots", "engine_graphs", "engine_ready", "codec_weights",
         "codec_warm", "streaming"]


def _probe(tiny_dir: Path, out: Path, variants: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "lowvram_probe.py"), "--device", "cpu",
                           "--assets", str(tiny_dir), "--variants", variants, "--tokens", "16",
                           "--json", str(out)], env=env, capture_output=True, text=True, timeout=600)


def test_a_cpu_variant_itemises_every_part(tiny_dir, tmp_path):
    out = tmp_path / "rows.json"
    proc = _probe(tiny_dir, out, "codec_one_bucket")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == ["codec_one_bucket"]
    row = rows[0]
    assert list(row["parts"]) == PARTS and list(row["deltas"]) == PARTS
    for part in row["parts"].values():
        assert part == {"smi_mib": None, "reserved_mib": None, "allocated_mib": None, "max_allocated_mib": None}
    assert row["smi_peak_mib"] is None and "allocator" not in row
    # the low_vram shape of one model: 4 engine slots, a codec pool of 4 streams, no graphs on the CPU
    assert row["slots"] == 4 and row["codec_streams"] == 4 and row["codec_graphs"] == 0
    assert row["streams_audio_s"] > 0
    assert "RESULT" in proc.stderr and "summary" in proc.stderr


def test_unknown_variants_are_refused(tiny_dir, tmp_path):
    proc = _probe(tiny_dir, tmp_path / "rows.json", "baseline,nope")
    assert proc.returncode == 2 and "unknown variants ['nope']" in proc.stderr
    assert not (tmp_path / "rows.json").exists()
