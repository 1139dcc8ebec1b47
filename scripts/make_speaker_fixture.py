#!/usr/bin/env python
"""Produce the speaker-encoder parity fixture with the official KaniTTS-2 package.

Install the reference without its (heavy) dependencies; its encoder needs only torch and
transformers::

    pip install --no-deps kani-tts-2==0.0.5
    PYTHONPATH=src python scripts/make_speaker_fixture.py

It writes a seeded random-weight encoder (:func:`kanitts.speaker.tiny.write_tiny_speaker_encoder`),
loads that folder into the reference ``EmbeddingsModel`` (strict key match), embeds
seeded inputs and stores the reference's embeddings in
``tests/fixtures/speaker/reference_parity.npz`` with a digest of the weights.
``tests/test_speaker_encoder.py`` checks kanitts against this file without the package,
and against the live package when it is installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _speaker_helpers import REFERENCE_PACKAGE, parity_inputs, reference_embedder_module  # noqa: E402

from kanitts.speaker.tiny import build_tiny_state, state_digest, write_tiny_speaker_encoder  # noqa: E402

logger = logging.getLogger("make_speaker_fixture")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/speaker/reference_parity.npz"))
    parser.add_argument("--seed", type=int, default=0, help="weight seed")
    parser.add_argument("--input-seed", type=int, default=1234)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ref = reference_embedder_module()
    if ref is None:
        raise SystemExit(f"install the reference first: pip install --no-deps {REFERENCE_PACKAGE}")
    from safetensors.torch import load_file
    from transformers import WavLMConfig

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_tiny_speaker_encoder(tmp, seed=args.seed)
        model = ref.EmbeddingsModel(WavLMConfig.from_pretrained(folder))
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        model.eval()
        x = parity_inputs(args.input_seed)
        with torch.no_grad():
            batched = model(x).numpy()
            single = np.stack([model(row[None])[0].numpy() for row in x])
    from importlib.metadata import version

    meta = {
        "reference": f"kani-tts-2=={version('kani-tts-2')}",
        "torch_version": torch.__version__,
        "weight_seed": args.seed,
        "input_seed": args.input_seed,
        "weights_digest": state_digest(build_tiny_state(seed=args.seed)[1]),
        "input_digest": float(x.double().abs().sum()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out,
        batched=batched.astype(np.float32),
        single=single.astype(np.float32),
        meta_json=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    )
    logger.info("wrote %s: %s", args.out, meta)


if __name__ == "__main__":
    main()
