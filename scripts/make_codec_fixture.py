#!/usr/bin/env python
"""Produce the NanoCodec parity fixture with NeMo as the reference implementation.

Run in a separate environment that has NeMo (never a dependency of kanitts)::

    python3 -m venv /work/nemo-venv
    /work/nemo-venv/bin/pip install "torch==2.13.0" "nemo-toolkit[tts]"
    PYTHONPATH=src /work/nemo-venv/bin/python scripts/make_codec_fixture.py

For the tiny and the full-size configuration it writes a seeded random-weight ``.nemo``
(:func:`kanitts.codec.write_tiny_nemo`), restores it with NeMo's
``AudioCodecModel.restore_from``, decodes seeded random codes with
``AudioCodecModel.decode`` and stores codes, lengths and NeMo's audio in
``tests/fixtures/codec/nemo_parity.npz``. The weights themselves are not stored (the
full-size archive is ~200 MB): tests regenerate them from the seed and compare a
SHA-256 of the weights recorded here, so RNG drift is reported as such rather than as a
parity failure. ``tests/test_codec_parity.py`` checks kanitts against this file without
NeMo.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kanitts.codec.fixtures import weights_digest
from kanitts.codec.tiny_nemo import build_tiny_state, write_nemo

logger = logging.getLogger("make_codec_fixture")

#: name -> (full_size, batch, frames, lengths): small inputs keep the fixture < 1 MB.
CASES: dict[str, tuple[bool, int, int, list[int]]] = {
    "tiny": (False, 3, 12, [12, 7, 1]),
    "full": (True, 2, 4, [4, 2]),
}


def nemo_decode(nemo_path: Path, codes: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
    """NeMo's ``AudioCodecModel.decode`` on ``codes[B, C, T]``."""
    from nemo.collections.tts.models import AudioCodecModel

    model = AudioCodecModel.restore_from(str(nemo_path), map_location="cpu").eval()
    with torch.inference_mode():
        audio, audio_len = model.decode(tokens=codes, tokens_len=lengths)
    expected = lengths * model.samples_per_frame
    if not torch.equal(audio_len.cpu().long(), expected.long()):
        raise RuntimeError(f"NeMo audio_len {audio_len.tolist()} != {expected.tolist()}")
    return audio.float().cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/codec/nemo_parity.npz"))
    parser.add_argument("--seed", type=int, default=0, help="weight seed")
    parser.add_argument("--codes-seed", type=int, default=1234)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import nemo

    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, object] = {
        "nemo_version": nemo.__version__,
        "torch_version": torch.__version__,
        "weight_seed": args.seed,
        "cases": {},
    }
    gen = torch.Generator().manual_seed(args.codes_seed)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (full_size, batch, frames, lengths) in CASES.items():
            started = time.perf_counter()
            config, state = build_tiny_state(full_size=full_size, seed=args.seed)
            path = write_nemo(Path(tmp) / f"{name}.nemo", config, state)
            codes = torch.randint(0, 4032, (batch, 4, frames), generator=gen)
            lens = torch.tensor(lengths, dtype=torch.long)
            audio = nemo_decode(path, codes, lens)
            arrays[f"{name}_codes"] = codes.numpy().astype(np.int16)
            arrays[f"{name}_lengths"] = lens.numpy().astype(np.int16)
            arrays[f"{name}_audio"] = audio.astype(np.float32)
            meta["cases"][name] = {  # type: ignore[index]
                "full_size": full_size,
                "weights_sha256": weights_digest(state),
                "audio_rms": float(np.sqrt((audio**2).mean())),
                "clamped_fraction": float((np.abs(audio) >= 1.0).mean()),
            }
            logger.info("%s: NeMo decode done in %.1fs (%s)", name, time.perf_counter() - started, meta["cases"][name])  # type: ignore[index]
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    logger.info("wrote %s (%.0f KiB)", args.out, args.out.stat().st_size / 1024)


if __name__ == "__main__":
    main()
