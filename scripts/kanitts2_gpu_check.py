#!/usr/bin/env python
"""KaniTTS-2 on the native engine on a CUDA device: CUDA graphs and the reference fixture.

1. For each fixture variant (``tests/fixtures/kanitts2/reference_parity.npz``): the tiny
   checkpoint in float32 on CUDA, decode through CUDA graphs, greedy with the fixture's
   speaker embedding -> the reference's tokens (same check as the CPU test, graphs on).
2. Full-size random KaniTTS-2 (LFM2-350M shape, bfloat16, graphs on): ``--streams``
   concurrent streams, each with its own speaker embedding and ``--tokens`` tokens; prints
   wall time and generated tokens per second (one run, random weights, engine only).

    PYTHONPATH=src:tests python scripts/kanitts2_gpu_check.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _kanitts2_helpers import GREEDY_RUNS, PROMPT, VARIANTS, speaker_embedding  # noqa: E402

from kanitts import tokens as t  # noqa: E402
from kanitts.engine.base import SamplingParams  # noqa: E402
from kanitts.engine.native.backend import NativeBackend  # noqa: E402
from kanitts.tiny_kanitts2 import write_kanitts2_model  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "kanitts2" / "reference_parity.npz"
logger = logging.getLogger("kanitts2_gpu_check")


async def collect(b: NativeBackend, params: SamplingParams, prompt: list[int]) -> list[int]:
    out: list[int] = []
    async for ids in b.stream(prompt, params):
        out += ids
    return out


async def fixture_check(tmp: Path, device: str) -> list[dict]:
    data = np.load(FIXTURE)
    meta = json.loads(bytes(data["meta_json"]).decode())
    rows = []
    for i, (step, rope, seed) in enumerate(VARIANTS):
        folder = write_kanitts2_model(tmp / f"v{i}", seed=seed, audio_step=step, learnable_rope=rope)
        b = NativeBackend(str(folder), device=device, dtype="float32", max_num_seqs=8, max_model_len=128,
                          force_opening=False, cuda_graphs=True)
        await b.start()
        try:
            spk = tuple(speaker_embedding(meta["speaker_seed"] + i).tolist())
            for j, (constrained, rep, n) in enumerate(GREEDY_RUNS):
                params = SamplingParams(temperature=0.0, repetition_penalty=rep, max_tokens=n, constrained=constrained,
                                        stop_token_ids=(t.END_OF_TEXT,), speaker_embedding=spk)
                # 4 copies at once: the decode runs in the 4-slot graph
                outs = await asyncio.gather(*(collect(b, params, PROMPT) for _ in range(4)))
                want = data[f"greedy_{i}_{j}"].tolist()
                rows.append({"variant": [step, rope], "run": j, "graphs": len(b.scheduler.step.graphs) if b.scheduler else 0,
                             "equal": all(o == want for o in outs)})
        finally:
            await b.close()
    return rows


async def throughput(tmp: Path, device: str, streams: int, tokens: int) -> dict:
    folder = write_kanitts2_model(tmp / "full", seed=0, full_size=True)
    b = NativeBackend(str(folder), device=device, dtype="bfloat16", max_num_seqs=streams,
                      max_model_len=tokens + 64, cuda_graphs=True)
    await b.start()
    try:
        def params(i: int) -> SamplingParams:
            e = torch.randn(128, generator=torch.Generator().manual_seed(i))
            return SamplingParams(seed=i, temperature=1.0, max_tokens=tokens, min_tokens=tokens,
                                  speaker_embedding=tuple((e / e.norm()).tolist()))

        await asyncio.gather(*(collect(b, params(i), PROMPT) for i in range(min(streams, 8))))  # warm-up
        t0 = time.perf_counter()
        outs = await asyncio.gather(*(collect(b, params(i), PROMPT) for i in range(streams)))
        wall = time.perf_counter() - t0
        valid = True
        for o in outs:
            try:
                t.FrameParser().feed(o)
            except t.MalformedStreamError:
                valid = False
        return {"streams": streams, "tokens_each": tokens, "wall_s": round(wall, 3),
                "tokens_per_s": round(streams * tokens / wall), "distinct_streams": len({tuple(o) for o in outs}),
                "all_frames_valid": valid, "startup_s": round(b.startup_seconds, 1)}
    finally:
        await b.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--device", default="cuda", help="cuda (graphs on); cpu runs the same checks eagerly")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
        result = {"device": name, "torch": torch.__version__, "fixture": await fixture_check(tmp, args.device),
                  "throughput": await throughput(tmp, args.device, args.streams, args.tokens)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
