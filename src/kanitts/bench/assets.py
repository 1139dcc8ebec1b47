"""Full-size random-weight assets for benchmarks: a model folder and a codec ``.nemo``
with the real sizes (speed and memory are real; the audio is noise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def ensure_assets(root: str | Path) -> tuple[Path, Path]:
    """``(root/model, root/codec.nemo)``, built if missing, in a subprocess so that no torch
    threads exist in the process that later starts vLLM."""
    root = Path(root)
    model, codec = root / "model", root / "codec.nemo"
    if not (model / "config.json").exists() or not codec.exists():
        code = "import sys; from kanitts.bench.assets import build_full_size; build_full_size(sys.argv[1])"
        subprocess.run([sys.executable, "-c", code, str(root)], check=True)
    return model, codec


def build_full_size(root: str | Path) -> None:
    """Write the full-size random-weight model and codec under ``root`` (``make-tiny --full-size``)."""
    from kanitts.tiny import make_tiny

    make_tiny(root, full_size=True)
