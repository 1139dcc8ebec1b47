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
                           "--json", str(out)], check=False, env=env, capture_output=True, text=True, timeout=600)


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


def _module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("lowvram_probe", ROOT / "scripts" / "lowvram_probe.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_deltas_split_each_part_into_torch_and_outside_torch():
    """The GPU arithmetic, on figures as a CUDA run records them: per part, in build order,
    nvidia-smi growth, torch-reserved growth and the rest (outside the allocator)."""
    marks = _module()._Marks(cuda=False)
    fig = {"allocated_mib": 0.0, "max_allocated_mib": 0.0}
    marks.parts = {"context": {"smi_mib": 621, "reserved_mib": 2.0, **fig},
                   "codec_weights": {"smi_mib": 660, "reserved_mib": 32.0, **fig},
                   "engine_weights": {"smi_mib": 1400, "reserved_mib": 740.0, **fig}}
    assert marks.deltas() == {
        "context": {"smi": None, "torch_reserved": None, "outside_torch": None},
        "codec_weights": {"smi": 39, "torch_reserved": 30.0, "outside_torch": 9.0},
        "engine_weights": {"smi": 740, "torch_reserved": 708.0, "outside_torch": 32.0},
    }


def test_segments_are_summed_by_pool_and_stream(monkeypatch):
    import torch

    mib = 2**20
    blocks = [{"size": 32 * mib, "state": "active_allocated"}, {"size": 2 * mib, "state": "inactive"}]
    snapshot = [
        {"segment_pool_id": (0, 0), "stream": 0, "total_size": 34 * mib, "allocated_size": 32 * mib, "blocks": blocks},
        {"segment_pool_id": (0, 0), "stream": 7, "total_size": 20 * mib, "allocated_size": 0, "blocks": []},
        {"segment_pool_id": (1, 3), "stream": 7, "total_size": 2 * mib, "allocated_size": mib,
         "blocks": [{"size": mib, "state": "active_allocated"}]},
    ]
    monkeypatch.setattr(torch.cuda, "memory_snapshot", lambda: snapshot)
    got = _module()._segments()
    assert got["pools"] == {
        "ordinary@stream0": {"segments": 1, "reserved_mib": 34.0, "allocated_mib": 32.0},
        "ordinary@stream7": {"segments": 1, "reserved_mib": 20.0, "allocated_mib": 0.0},
        "graph(1, 3)@stream7": {"segments": 1, "reserved_mib": 2.0, "allocated_mib": 1.0},
    }
    assert got["largest_blocks_mib"] == [[32.0, 1], [1.0, 1]]
