#!/usr/bin/env python
"""Produce the KaniTTS-2 model parity fixture with the official ``kani-tts-2`` package.

The reference model needs transformers 4.5x (its README pins 4.56.0; transformers 5 lacks
``Lfm2HybridConvCache``). Install both beside the project's environment, e.g.::

    pip install --no-deps kani-tts-2==0.0.5
    pip install --no-deps --target /tmp/tf456 transformers==4.56.0 huggingface_hub==0.34.4 tokenizers==0.22.0
    PYTHONPATH=/tmp/tf456:src python scripts/make_kanitts2_fixture.py

For each checked variant (``audio_step`` 1.0 / 0.5, learnable RoPE off / on) it writes a
seeded random KaniTTS-2 checkpoint (:func:`kanitts.tiny_kanitts2.write_kanitts2_model`),
loads it into the reference ``KaniTTS2ForCausalLM`` (every key), and stores in
``tests/fixtures/kanitts2/reference_parity.npz``: teacher-forced logits (prompt + speaker row
+ opening + 3 frames) at a few columns, their full-vocabulary argmax and row sums, and the
reference's greedy tokens with a speaker embedding. ``tests/test_kanitts2_parity.py`` checks
the native engine against this file without the package, and against the live package
when it imports.
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
from _kanitts2_helpers import (  # noqa: E402
    GREEDY_RUNS,
    PROMPT,
    REFERENCE_PACKAGE,
    VARIANTS,
    build_reference,
    logit_columns,
    reference_greedy,
    reference_model_module,
    reference_teacher_forced,
    speaker_embedding,
    teacher_forced_ids,
)

from kanitts.tiny_kanitts2 import build_state, kanitts2_config, state_digest, write_kanitts2_model  # noqa: E402

logger = logging.getLogger("make_kanitts2_fixture")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/kanitts2/reference_parity.npz"))
    parser.add_argument("--speaker-seed", type=int, default=5)
    parser.add_argument("--ids-seed", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ref = reference_model_module()
    if ref is None:
        raise SystemExit(f"install the reference first ({REFERENCE_PACKAGE} --no-deps, transformers 4.56)")
    import transformers
    from importlib.metadata import version

    cols = logit_columns()
    ids = teacher_forced_ids(args.ids_seed)
    arrays: dict[str, np.ndarray] = {"columns": cols.numpy().astype(np.int64)}
    digests = []
    for i, (step, rope, seed) in enumerate(VARIANTS):
        speaker = speaker_embedding(args.speaker_seed + i)
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_kanitts2_model(tmp, seed=seed, audio_step=step, learnable_rope=rope)
            model = build_reference(ref, folder)
            logits = reference_teacher_forced(ref, model, ids, speaker)
            arrays[f"tf_cols_{i}"] = logits[:, cols].numpy().astype(np.float32)
            arrays[f"tf_argmax_{i}"] = logits.argmax(-1).numpy().astype(np.int64)
            arrays[f"tf_rowsum_{i}"] = logits.double().sum(-1).numpy()
            for j, (constrained, rep, n) in enumerate(GREEDY_RUNS):
                toks = reference_greedy(model, PROMPT, speaker, n, rep, constrained)
                arrays[f"greedy_{i}_{j}"] = np.asarray(toks, dtype=np.int64)
                logger.info("variant %d run %d: %s", i, j, toks[:12])
        digests.append(state_digest(build_state(kanitts2_config(audio_step=step, learnable_rope=rope), seed)))
    meta = {
        "reference": f"kani-tts-2=={version('kani-tts-2')}",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "variants": [list(v) for v in VARIANTS],
        "weights_digests": digests,
        "speaker_seed": args.speaker_seed,
        "ids_seed": args.ids_seed,
        "greedy_runs": [list(r) for r in GREEDY_RUNS],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, meta_json=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    logger.info("wrote %s (%d bytes): %s", args.out, args.out.stat().st_size, meta)


if __name__ == "__main__":
    main()
