"""GPU suite for the native engine (run on the device; skipped without CUDA).

Full-size random weights in bf16 (``KANITTS_NATIVE_ASSETS``, default /tmp/kanitts-native,
built by ``scripts/native_bench.py assets`` or here). Tolerances:

* logits: our bf16 forward is no further from transformers' float32 forward than
  transformers' own bf16 forward is (x1.5, + 0.01 absolute), teacher-forced;
* graphs: every (batch bucket, attention span) graph gives exactly the tokens of the same
  step run eagerly (same kernels, same inputs); every (group, width) prefill graph gives
  exactly the first tokens and slot state of the same padded prefill run eagerly;
* an engine stream's frames are all valid, and a seeded stream repeats itself exactly when
  run again in the same batch shape.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

from kanitts import tokens as tk  # noqa: E402
from kanitts.engine.base import SamplingParams  # noqa: E402

PROMPT = [tk.START_OF_HUMAN, 1, *range(300, 318), tk.END_OF_TEXT, tk.END_OF_HUMAN]


@pytest.fixture(scope="module")
def model_dir() -> str:
    from kanitts.tiny import make_model

    path = Path(os.environ.get("KANITTS_NATIVE_ASSETS", "/tmp/kanitts-native")) / "model"
    if not (path / "config.json").exists():
        make_model(path, speakers=["andrew"], language="en", full_size=True)
    return str(path)


@torch.no_grad()
def test_bf16_logits_as_close_to_float32_as_transformers_own_bf16(model_dir):
    from transformers import Lfm2ForCausalLM

    from kanitts.engine.native.model import StateCache
    from kanitts.engine.native.weights import load_lfm2

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 80539, (2, 48), generator=g).cuda()
    ref32 = Lfm2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda().eval()
    want = ref32(input_ids=ids).logits.float()
    del ref32
    ref16 = Lfm2ForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    hf_err = (ref16(input_ids=ids).logits.float() - want).abs().max().item()
    del ref16
    m = load_lfm2(model_dir, "cuda", torch.bfloat16)
    cache = StateCache(m.spec, 2, 64, m.device, m.dtype)
    got = m.logits(m.prefill(cache, torch.tensor([0, 1], device="cuda"), ids, torch.tensor([48, 48], device="cuda")))
    err = (got.float() - want).abs().max().item()
    print(f"bf16 max abs logit error vs float32: native {err:.4f}, transformers {hf_err:.4f}")
    assert err <= 1.5 * hf_err + 0.01


@torch.no_grad()
def test_every_graph_matches_the_eager_step(model_dir):
    from kanitts.engine.native.graphs import DecodeStep
    from kanitts.engine.native.sampler import Sampler
    from kanitts.engine.native.slots import SlotParams, SlotPool
    from kanitts.engine.native.weights import load_lfm2

    m = load_lfm2(model_dir, "cuda", torch.bfloat16)
    pool = SlotPool(m, 64, 512)
    sampler = Sampler(m, pool)
    step = DecodeStep(m, pool, sampler, graphs=True)
    step.capture()
    assert len(step.graphs) == len(step.sizes) * len(step.spans) == 7 * 2
    opened = tk.with_opening(PROMPT)
    pool.admit(list(range(64)), [SlotParams(prompt=opened, temperature=0.8, top_p=0.9, repetition_penalty=1.1,
                                            seed=i, min_tokens=0, constrained=True, stop_ids=tk.STOP_TOKEN_IDS)
                                 for i in range(64)])
    pool.tok.copy_(torch.tensor([tk.audio_token(i % 4, i) for i in range(64)], device="cuda"))
    pool.cache_len.copy_(torch.arange(64, device="cuda") * 3 + 5)
    pool.rope_pos.copy_(pool.cache_len.float())
    names = ["tok", "cache_len", "rope_pos", "gen", "seen"]
    start = {n: getattr(pool, n).clone() for n in names}
    cache0 = {k: (v.clone(), pool.cache.v[k].clone()) for k, v in pool.cache.k.items()}
    conv0 = {k: v.clone() for k, v in pool.cache.conv.items()}

    def reset() -> None:
        for n in names:
            getattr(pool, n).copy_(start[n])
        for k, (kk, vv) in cache0.items():
            pool.cache.k[k].copy_(kk)
            pool.cache.v[k].copy_(vv)
        for k, v in conv0.items():
            pool.cache.conv[k].copy_(v)

    for (b, span), graph in step.graphs.items():
        reset()
        eager = [step.step_eager(b, span, False).clone() for _ in range(6)]
        reset()
        graphed = []
        for _ in range(6):
            graph.replay()
            graphed.append(pool.tok[:b].clone())
        assert all(torch.equal(e, g) for e, g in zip(eager, graphed)), (b, span)
        for t in graphed[-1].tolist():
            assert tk.AUDIO_TOKEN_START <= t < tk.AUDIO_TOKEN_END or t == tk.END_OF_SPEECH


@torch.no_grad()
def test_every_prefill_graph_matches_the_same_padded_prefill_run_eagerly(model_dir):
    """Each (group, width) prefill graph, replayed, gives exactly the first tokens and slot
    state of the same padded computation run eagerly (pad rows included: one short of the
    group bucket); agreement with the scheduler's unpadded eager prefill is reported (bf16
    kernels of other shapes may round differently)."""
    from kanitts.engine.native.graphs import DecodeStep
    from kanitts.engine.native.prefill_graphs import GroupPrefill
    from kanitts.engine.native.sampler import Sampler
    from kanitts.engine.native.slots import SlotParams, SlotPool
    from kanitts.engine.native.weights import load_lfm2

    m = load_lfm2(model_dir, "cuda", torch.bfloat16)
    pool = SlotPool(m, 16, 512)
    sampler = Sampler(m, pool)
    step = DecodeStep(m, pool, sampler, graphs=True)
    step.capture()
    graphed = GroupPrefill(m, pool, sampler, graphs=True)
    graphed.capture(step.mempool)
    # groups 1, 2, 4, 8 x widths 16 ... 256, at most 1,024 padded rows: 8 x 192 and 8 x 256 run as 2 x 4
    assert sorted(graphed.graphs) == sorted(graphed.keys) and len(graphed.graphs) == 4 * 8 - 2
    print(f"{len(graphed.graphs)} prefill graphs in {graphed.capture_seconds:.1f} s, "
          f"+{graphed.pool_growth_mib:.0f} MiB reserved")
    eager = GroupPrefill(m, pool, sampler, graphs=False)
    agree = total = 0
    for g, w in sorted(graphed.graphs):
        n = g if g <= 2 else g - 1  # with pad rows where the bucket below does not hold the group
        slots = list(range(3, 3 + n))
        prompts = [[tk.START_OF_HUMAN, *range(300, 300 + w - i - 4), tk.END_OF_HUMAN, *tk.OPENING] for i in range(n)]
        sp = [SlotParams(prompt=pr, temperature=0.8, top_p=0.9, repetition_penalty=1.1, seed=i, min_tokens=0,
                         constrained=True, stop_ids=tk.STOP_TOKEN_IDS) for i, pr in enumerate(prompts)]

        def state(slots: list[int], w: int) -> list[torch.Tensor]:
            c = pool.cache
            big = [*c.k.values(), *c.v.values()]
            out = [t[slots, :w].clone() for t in big] + [t[slots].clone() for t in c.conv.values()]
            return out + [getattr(pool, k)[slots].clone() for k in ("cache_len", "rope_pos", "tok", "gen", "seen")]

        runs = []
        for gp in (graphed, eager):
            pool.admit(slots, sp)
            first = gp.run(slots, prompts).tolist()
            runs.append((first, state(slots, w)))
        (fg, sg), (fe, se) = runs
        assert fg == fe, (g, w)
        assert all(torch.equal(a, b) for a, b in zip(sg, se)), (g, w)
        assert [int(x) for x in pool.gen[slots].tolist()] == [1] * n, (g, w)
        for t in fg:
            assert tk.AUDIO_TOKEN_START <= t < tk.AUDIO_TOKEN_START + tk.CODEBOOK_SIZE
        # the scheduler's unpadded eager prefill of the same group
        pool.admit(slots, sp)
        idx = torch.tensor(slots, device="cuda")
        ids = torch.zeros(n, w, dtype=torch.int64)
        for i, pr in enumerate(prompts):
            ids[i, : len(pr)] = torch.tensor(pr)
        lens = torch.tensor([len(pr) for pr in prompts], device="cuda")
        hidden = m.prefill(pool.cache, idx, ids.cuda(), lens)
        pool.tok.index_copy_(0, idx, torch.tensor([pr[-1] for pr in prompts], device="cuda"))
        ref = sampler.sample(hidden[torch.arange(n, device="cuda"), lens - 1], idx, False).tolist()
        agree += sum(a == b for a, b in zip(ref, fg))
        total += n
    print(f"graphed vs unpadded eager prefill (bf16): {agree} of {total} first tokens equal")


def test_engine_admits_through_the_prefill_graphs(model_dir):
    from kanitts.engine.native.backend import NativeBackend

    async def go() -> tuple[list[int], list[int], int]:
        b = NativeBackend(model_dir, device="cuda", dtype="bfloat16", max_num_seqs=8, max_model_len=512)
        await b.start()

        async def one() -> list[int]:
            out: list[int] = []
            async for ids in b.stream(PROMPT, SamplingParams(seed=5, max_tokens=64)):
                out += ids
            return out

        first, again = await one(), await one()
        assert b.scheduler is not None and b.scheduler.prefill is not None
        graphed = b.scheduler.stats.graphed_prefills
        await b.close()
        return first, again, graphed

    first, again, graphed = asyncio.run(go())
    assert graphed == 2 and first == again
    tk.FrameParser().feed(first)


def test_engine_streams_valid_frames_and_repeats_a_seeded_stream(model_dir):
    from kanitts.engine.native.backend import NativeBackend

    async def go() -> tuple[list[int], list[int], list[list[int]], float]:
        b = NativeBackend(model_dir, device="cuda", dtype="bfloat16", max_num_seqs=64, max_model_len=1024,
                          warmup=True)
        await b.start()

        async def one(i: int, n: int = 400) -> list[int]:
            out: list[int] = []
            async for ids in b.stream(PROMPT, SamplingParams(seed=i, max_tokens=n)):
                out += ids
            return out

        alone = await one(99)
        alone2 = await one(99)
        crowd = await asyncio.gather(*(one(i) for i in range(63)), one(99))
        await b.close()
        return alone, alone2, crowd, b.startup_seconds

    alone, alone2, crowd, startup = asyncio.run(go())
    print(f"native engine start-up (64 slots x 1024, graphs): {startup:.1f} s")
    for toks in [alone, *crowd]:
        parser = tk.FrameParser()
        parser.feed(toks)
        parser.close()
    assert alone2 == alone  # same seed, same batch shape: the same tokens
    same = sum(x == y for x, y in zip(alone, crowd[-1]))
    # bf16 kernels may round differently at another batch size: reported, not asserted
    print(f"seeded stream alone vs among 63 others (bf16): {same} of {len(alone)} positions equal")


def test_the_codec_worker_decodes_on_its_own_stream_beside_a_busy_default_stream(tmp_path):
    """With the native engine the codec shares the process (one CUDA context): its steps run
    on the worker's own non-blocking stream, so they finish while the default stream (where
    the engine's decode step runs) is still busy, for the fast and the plain path."""
    import numpy as np

    from kanitts.codec import CodecWorker, NanoCodec, write_tiny_nemo

    codec = NanoCodec.from_pretrained(write_tiny_nemo(tmp_path, seed=6)).to("cuda")
    frames = torch.randint(0, 4032, (12, 4), generator=torch.Generator().manual_seed(1)).tolist()

    async def decode(w: CodecWorker) -> np.ndarray:
        async def src():
            yield frames

        return np.concatenate([c async for c in w.decode(src())])

    async def check(fast: bool) -> None:
        w = CodecWorker(codec, max_streams=2, fast=fast)
        assert w.stream is not None and w.stream != torch.cuda.current_stream()
        w.warmup()
        want = await decode(w)  # warm: kernels compiled and tuned
        torch.cuda.synchronize()
        busy = torch.cuda.current_stream()
        torch.cuda._sleep(int(3e9))  # seconds of spinning on the default stream
        got = await decode(w)
        assert not busy.query(), f"the codec step waited for the default stream (fast={fast})"
        busy.synchronize()
        np.testing.assert_array_equal(got, want)
        await w.aclose()

    for fast in (True, False):
        asyncio.run(check(fast))
